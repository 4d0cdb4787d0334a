"""Writing media: images and H.264 MP4 video (PyAV) with the input's timestamps and its audio
packets copied unchanged, the index first (faststart). Every output goes to a temporary file
beside its final name and is renamed only when complete (:func:`atomic_path`)."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import cv2
import numpy as np

from copart.models.errors import CopartError
from copart.models.files import UNWRITABLE, atomic_path, check_writable, current_umask, unwritable

__all__ = ["VideoWriter", "atomic_path", "check_output", "check_writable", "current_umask", "unwritable",
           "write_atomic_text", "write_image"]


def write_image(image: np.ndarray, path, atomic: bool = True) -> None:
    """Write an RGB (or single-channel) uint8 image, format from the suffix; atomically unless
    ``atomic`` is False (a file inside a temporary folder)."""
    path = Path(path)
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(path.suffix or ".png", pixels)
    if not ok:
        raise CopartError(f"Cannot encode an image as {path.suffix} for {path}.")
    if not atomic:
        data.tofile(str(path))
        return
    with atomic_path(path) as tmp:
        data.tofile(str(tmp))


def check_output(path: Path, force: bool, inputs) -> None:
    """An output may not be an input, may replace a file only with ``force``, and needs its folder."""
    for given in inputs:
        if path.exists() and Path(given).exists() and path.resolve() == Path(given).resolve():
            raise CopartError(f"Output {path} is an input file; copart never overwrites its inputs.")
    if path.exists() and not force:
        raise CopartError(f"Output {path} already exists; pass --force to replace it.")
    if not path.parent.is_dir():
        raise CopartError(f"Output folder {path.parent} does not exist.")
    check_writable(path.parent)


class VideoWriter:
    """Writes H.264 (yuv420p) MP4 with given timestamps, and copies audio packets.

    Frames of odd width or height are padded by one edge pixel (4:2:0 needs even sizes).
    The file appears under its final name only after :meth:`close` succeeds; as a context
    manager it closes on success and aborts (nothing left behind) on any error.
    """

    def __init__(
        self,
        path,
        width: int,
        height: int,
        fps: Optional[Fraction],
        time_base: Optional[Fraction],
        audio_streams=(),
        crf: int = 18,
        preset: str = "medium",
    ):
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        self.container = None
        self.width, self.height = width + width % 2, height + height % 2
        self.fps = Fraction(fps) if fps else Fraction(25)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        try:
            # faststart: the index (moov) is moved before the frames (mdat) when the file is closed,
            # so that a browser or player starts playing while the file still loads.
            self.container = av.open(str(self.tmp), mode="w", format="mp4", options={"movflags": "faststart"})
            self.stream = self.container.add_stream("libx264", rate=self.fps)
            self.stream.width, self.stream.height = self.width, self.height
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = self.time_base
            self.stream.codec_context.time_base = self.time_base
            # tune=psnr (no adaptive quantisation, no psycho-visual tweaks) and no macroblock
            # tree: each region's quantiser then depends on its own pixels, not on what changed
            # elsewhere, so a swap leaves the rest of the frame as a plain re-encode would.
            self.stream.options = {"crf": str(int(crf)), "preset": preset, "tune": "psnr", "x264-params": "mbtree=0"}
            self.audio = {}
            self.notices: list[str] = []
            for s in audio_streams:
                try:
                    self.audio[s.index] = self.container.add_stream_from_template(s)
                except (ValueError, av.error.FFmpegError):
                    self.notices.append(
                        f"the audio stream ({s.codec_context.name}) cannot be copied into MP4 and is left out"
                    )
        except BaseException as exc:
            self._abort()
            self._raise_unwritable(exc)
            raise
        self.frames = 0
        self._last_pts = None
        # Held while muxing a video packet: a pipeline that writes audio from another thread
        # (under the same lock) sets it; the encoding itself runs outside it.
        self.mux_lock = contextlib.nullcontext()

    def write(self, image: np.ndarray, pts: Optional[int] = None) -> None:
        """Encode an RGB uint8 frame; ``pts`` in the writer's time base (None: frame count)."""
        try:
            self._write(image, pts)
        except OSError as exc:
            self._raise_unwritable(exc)
            raise

    def _write(self, image: np.ndarray, pts: Optional[int]) -> None:
        if image.shape[0] != self.height or image.shape[1] != self.width:
            image = np.pad(
                image, ((0, self.height - image.shape[0]), (0, self.width - image.shape[1]), (0, 0)), mode="edge"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if pts is None:
            pts = int(round(self.frames / (self.fps * self.time_base)))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # encoders need strictly increasing timestamps
        frame.pts = pts
        frame.time_base = self.time_base
        self._last_pts = pts
        packets = self.stream.encode(frame)
        with self.mux_lock:
            for packet in packets:
                self.container.mux(packet)
        self.frames += 1

    def write_audio(self, packet, offset: float = 0.0) -> None:
        """Mux an input audio packet unchanged, its timestamps moved back by ``offset``
        seconds (the time of the first kept video frame) and rescaled by the muxer."""
        out = self.audio.get(packet.stream.index)
        if out is None:
            return
        if offset:
            shift = int(round(offset / packet.time_base))
            packet.pts -= shift
            packet.dts -= shift
        packet.stream = out
        try:
            self.container.mux(packet)
        except OSError as exc:
            self._raise_unwritable(exc)
            raise

    def close(self) -> Path:
        """Flush, close and move the file to its final name."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
        except BaseException as exc:
            self._abort()
            self._raise_unwritable(exc)
            raise
        self._atomic.__exit__(None, None, None)
        return self.path

    def _raise_unwritable(self, exc: BaseException) -> None:
        """A file-system error (read-only, full disk) as one sentence naming the output."""
        if isinstance(exc, OSError) and getattr(exc, "errno", None) in UNWRITABLE:
            raise unwritable(self.path, exc) from None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.container is not None:
                self.container.close()
        with contextlib.suppress(Exception):
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)
        if self.tmp.exists():
            self.tmp.unlink()

    def abort(self) -> None:
        """Give up: close and delete the temporary file; nothing appears under the final name."""
        self._abort()



def write_atomic_text(path, text: str) -> None:
    """Write a small text file (JSON, YAML) atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)

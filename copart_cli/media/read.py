"""Reading media, streamed: :class:`MediaReader` decodes a video, GIF, image or folder of
frames one frame at a time (PyAV; OpenCV for still images); nothing holds a whole video."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional

import av
import cv2
import numpy as np

from copart.models.errors import CopartError, first_line
from copart.media.kinds import sniff

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class Frame:
    """One decoded frame: ``image`` (H, W, 3) uint8 RGB, upright; ``pts`` in ``time_base``."""

    image: np.ndarray
    index: int
    pts: Optional[int] = None
    time_base: Optional[Fraction] = None

    @property
    def time(self) -> Optional[float]:
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _starts_as(path: Path) -> Optional[str]:
    """The media format a file's first bytes name ("an MP4/MOV video"), or None."""
    kind = sniff(path)
    return kind if kind and kind.endswith((" video", " image")) else None


def _truncated(what: str, path: Path, kind: str, detail: str = "") -> CopartError:
    return CopartError(
        f"{what} {path} looks incomplete or truncated: it starts as {kind} but cannot be read{detail}; "
        f"copy or download it again."
    )


def read_image(path, what: str = "Image") -> np.ndarray:
    """An RGB uint8 image (EXIF orientation applied); one sentence when it cannot be read."""
    path = Path(path)
    _check_exists(path, what)
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        kind = _starts_as(path) if data.size else None
        if kind:
            raise _truncated(what, path, kind)
        raise CopartError(f"{what} {path} is not an image copart can read.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def natural_key(path: Path):
    """frame2.png before frame10.png."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise CopartError(f"{what} {path} does not exist.")
    if path.is_dir():
        raise CopartError(f"{what} {path} is a folder, not a file.")
    if not os.access(path, os.R_OK):
        raise CopartError(f"{what} {path} cannot be read (permission denied).")


def _rotate(image: np.ndarray, degrees: int) -> np.ndarray:
    """Turn a decoded frame upright: the display matrix rotates it ``degrees`` counter-clockwise."""
    turns = int(round(degrees / 90)) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


class MediaReader:
    """Streams the frames of a video, GIF or still image, optionally between ``start``
    and ``end`` seconds or for ``max_frames`` frames.

    ``on_audio`` receives every audio packet in the kept time range, in demux order,
    so a writer can copy the sound without decoding it.
    """

    def __init__(
        self,
        path,
        what: str = "Video",
        start: Optional[float] = None,
        end: Optional[float] = None,
        max_frames: Optional[int] = None,
        fps: float = 25.0,
    ):
        self.path = Path(path)
        self.what = what
        self.start = start
        self.end = end
        self.max_frames = max_frames
        if start is not None and end is not None and end <= start:
            raise CopartError(f"--end ({end}) must be after --start ({start}).")
        self.container = None
        self.audio_streams: list = []
        self.folder: Optional[list[Path]] = None
        if self.path.is_dir():
            self._open_folder(fps)
            return
        _check_exists(self.path, what)
        self.still = is_image(self.path)
        if self.still:
            image = read_image(self.path, what)
            self._image = image
            self.height, self.width = image.shape[:2]
            self.fps = None
            self.time_base = None
            self.estimated_frames = 1
            return
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            kind = _starts_as(self.path)
            if kind:
                raise _truncated(what, self.path, kind, f" ({first_line(exc)})") from None
            raise CopartError(f"{what} {self.path} is not a video or image copart can read ({first_line(exc)}).") from None
        if not self.container.streams.video:
            self.container.close()
            raise CopartError(f"{what} {self.path} has no video stream.")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self._decoding_threads = None
        self.audio_streams = list(self.container.streams.audio)
        self.time_base = self.stream.time_base
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.fps = Fraction(rate) if rate else None
        self.estimated_frames = self._estimate_frames()
        try:
            self._check_tail()
        except BaseException:
            self.close()
            raise

    def set_decoding_threads(self, count: Optional[int]) -> None:
        """The video decoder's threads (None: FFmpeg's choice, frame and slice threads); takes
        effect when decoding starts, so call it before :meth:`frames`. Images and folders of
        images ignore it."""
        if self.container is not None:
            self.stream.thread_count = 0 if count is None else int(count)
            self._decoding_threads = count

    def _open_folder(self, fps: float) -> None:
        """A folder of frames: its images in natural order, at ``fps``."""
        files = sorted((p for p in self.path.iterdir() if is_image(p)), key=natural_key)
        if not files:
            raise CopartError(f"{self.what} folder {self.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        self.still = False
        self.fps = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / self.fps
        first = int(round((self.start or 0) * fps))
        last = int(round(self.end * fps)) if self.end is not None else len(files)
        files = files[first:last]
        if self.max_frames is not None:
            files = files[: self.max_frames]
        self.folder = files
        self.estimated_frames = len(files)

    def _folder_frames(self) -> Iterator[Frame]:
        self.offset = 0.0
        shape = None
        for i, path in enumerate(self.folder):
            image = read_image(path, "Frame")
            if shape is not None and image.shape != shape:
                raise CopartError(
                    f"Frame {path} is {image.shape[1]}x{image.shape[0]} but the folder's first frame is "
                    f"{shape[1]}x{shape[0]}; all frames of a folder must have one size."
                )
            shape = image.shape
            yield Frame(image, i, i, self.time_base)
        if not self.folder:
            raise CopartError(f"{self.what} folder {self.path} has no frames in the chosen range.")

    def _estimate_frames(self) -> Optional[int]:
        n = self.stream.frames or 0
        duration = None
        if self.stream.duration is not None and self.time_base:
            duration = float(self.stream.duration * self.time_base)
        elif self.container.duration:
            duration = self.container.duration / av.time_base
        if not n and duration and self.fps:
            n = int(round(duration * float(self.fps)))
        if n and self.fps and (self.start or self.end):
            first = int((self.start or 0) * float(self.fps))
            last = int(self.end * float(self.fps)) if self.end is not None else n
            n = max(0, min(n, last) - first)
        if self.max_frames is not None:
            n = min(n, self.max_frames) if n else self.max_frames
        return n or None

    def frames(self, on_audio: Optional[Callable] = None) -> Iterator[Frame]:
        """Decoded frames, upright (display rotation applied), in order; their ``pts`` count
        from the first kept frame. ``on_audio(packet, offset)`` gets each audio packet of the
        kept range with ``offset``, the first kept frame's time in seconds (None until known).
        Raises a one-sentence error when nothing decodes."""
        if self.still:
            yield Frame(self._image, 0)
            return
        if self.folder is not None:
            yield from self._folder_frames()
            return
        count = 0
        reach = None  # seconds from the stream's first timestamp to the end of the last frame kept
        self.offset = None
        # --start/--end count from the stream's first timestamp (MPEG-TS starts at ~1.4 s, say).
        base = float(self.stream.start_time * self.time_base) if self.stream.start_time is not None else 0.0
        start = base + self.start if self.start else None
        end = base + self.end if self.end is not None else None
        if start and not self._seek_before(start):
            self._reopen()  # the seek landed past the start (MPEG-TS seeks by bytes): decode from the top
        streams = [self.stream] + (self.audio_streams if on_audio else [])
        done = False
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.type == "audio":
                    t = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    if packet.dts is None or t is None:
                        continue
                    if (start and t < start) or (end is not None and t >= end):
                        continue
                    on_audio(packet, self.offset)
                    continue
                for vf in packet.decode():
                    t = vf.time
                    if t is not None:  # how far the file goes, frames before --start included
                        held = getattr(vf, "duration", None)  # PyAV 13 and later
                        length = float(held * vf.time_base) if held else self._period()
                        reach = max(reach or 0.0, t - base + length)
                    if start and t is not None and t < start - 1e-6:
                        continue
                    if end is not None and t is not None and t >= end:
                        done = True
                        break
                    if self.offset is None:
                        self.offset = t or 0.0
                    pts = None if vf.pts is None else vf.pts - int(round(self.offset / vf.time_base))
                    rotation = int(round(getattr(vf, "rotation", 0) or 0))
                    image = _rotate(vf.to_ndarray(format="rgb24"), rotation)
                    yield Frame(image, count, pts, vf.time_base)
                    count += 1
                    if self.max_frames is not None and count >= self.max_frames:
                        done = True
                        break
                if done:
                    break
        except av.error.FFmpegError as exc:
            failure = exc  # a damaged tail: what decoded is checked against what the header promises
        else:
            failure = None
        if not done and (count or self.start):
            short = self._ended_early(count, reach if reach is not None else self.start)
            if short is not None:
                raise short
        if count == 0 and failure is not None:
            raise CopartError(f"{self.what} {self.path} cannot be decoded ({first_line(failure)}).")
        if count == 0:
            raise CopartError(f"{self.what} {self.path} has no frames in the chosen range.")

    TAIL_PACKETS = 2000  # packets the look at a file's tail reads at most

    def _check_tail(self) -> None:
        """Before any frame is decoded: the error :meth:`frames` would raise at the end, for a
        file whose video packets stop short of what the header promises and of the range asked
        for (a file cut short with its index first, as ``-movflags +faststart`` writes it).
        A seek to just before the end finds the packets there in a whole file (a few packets
        read); only when they are missing is the file's video read through (demuxed, not
        decoded) to see how far it goes. Says nothing when it cannot tell."""
        length, slack = self._header_end()
        if length is None:
            return
        base = float(self.stream.start_time * self.time_base) if self.stream.start_time is not None else 0.0
        period = self._period()
        tolerance = 2 * period + slack + 1e-3
        wanted = min(length, self.end) if self.end is not None else length

        def packets():  # (seconds from the stream's start, seconds to the end of the packet) of each whole packet
            try:
                for packet in self.container.demux(self.stream):
                    t = packet.pts if packet.pts is not None else packet.dts
                    if t is None or packet.size == 0 or packet.is_corrupt:
                        continue
                    span = float(packet.duration * packet.time_base) if packet.duration else period
                    yield float(t * packet.time_base) - base, span
            except av.error.FFmpegError:
                return  # a damaged tail: the packets end here

        try:
            self.container.seek(int((base + max(0.0, wanted - 1.0)) / self.time_base), stream=self.stream,
                                backward=True, any_frame=True)
            for i, (t, span) in enumerate(packets()):
                if t + span >= wanted - tolerance or i >= self.TAIL_PACKETS:
                    return  # the packets are there (or the look would take too long to tell)
            self._reopen()
            count, reach, start = 0, None, self.start or 0.0
            for t, span in packets():  # the packets fall short: how far does the file go?
                reach = max(reach or 0.0, t + span)
                if t < start - 1e-6:
                    continue
                if self.end is not None and t >= self.end:
                    return  # the range asked for ends before the cut
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    return
        except av.error.FFmpegError:
            return
        finally:
            self._reopen()
        short = self._ended_early(count, reach if reach is not None else self.start)
        if short is not None:
            raise short

    def _period(self) -> float:
        """Seconds per frame at the stream's average rate (1/25 when it has none)."""
        return 1 / float(self.fps) if self.fps else 0.04

    def _header_end(self) -> tuple[Optional[float], float]:
        """The video's length by its header, in seconds from its first timestamp, and the
        slack that figure needs: the stream's duration (MP4, AVI, MPEG-TS, GIF), its track's
        DURATION tag (Matroska, WebM), or the container's when the video is all it holds (the
        container's start may be counted in or not: FLV). (None, 0) when the header says
        nothing."""
        stream = self.stream
        if stream.duration and self.time_base:
            return float(stream.duration * self.time_base), 0.0
        tag = (stream.metadata or {}).get("DURATION", "")
        match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag.strip())
        if match:
            hours, minutes, seconds = match.groups()
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds), 0.0
        if self.container.duration and len(self.container.streams) == 1:
            offset = abs(self.container.start_time or 0) / av.time_base
            return self.container.duration / av.time_base, offset
        return None, 0.0

    def _ended_early(self, count: int, reach: Optional[float]) -> Optional[CopartError]:
        """The error for a video whose frames gave out before the range asked for, or before the
        header's length, by more than two frames; None when they did not. It takes the frames
        read (against the header's frame count, when the whole stream was asked for) and the
        time they reach (against the header's length) both to say so where both are known: an
        edit list may drop frames the count includes, a frame may be held longer than the rate
        says, but a cut file falls short by both."""
        if reach is None:
            return None
        length, slack = self._header_end()
        tolerance = 2 * self._period() + slack + 1e-3
        by_time = by_count = None
        if length is not None:
            wanted = min(length, self.end) if self.end is not None else length
            by_time = reach < wanted - tolerance
        total = self.stream.frames or 0
        counted = total and not self.start and self.end is None
        if counted:
            by_count = count < min(total, self.max_frames or total) - 2
        if by_time is None and by_count is None or by_time is False or by_count is False:
            return None
        frames = f" ({count} of its {total} frames)" if counted else ""
        promised = f" of the {length:.2f} s its header gives" if length is not None else ""
        keep = int(reach * 10) / 10
        advice = f", or keep to the part that reads with --end {keep:g}" if keep > (self.start or 0) else ""
        return CopartError(
            f"{self.what} {self.path} ended early: it can be read only to {reach:.2f} s{frames}{promised}, so it "
            f"looks cut short; copy or download it again{advice}."
        )

    def _seek_before(self, start: float) -> bool:
        """Seek to the key frame before ``start``; False when that does not land before it."""
        try:
            self.container.seek(int(start / self.time_base), stream=self.stream, backward=True)
            first = next(iter(self.container.decode(self.stream)), None)
            if first is None or first.time is None or first.time > start + 1e-6:
                return False
            self.container.seek(int(start / self.time_base), stream=self.stream, backward=True)
            return True
        except av.error.FFmpegError:
            return False

    def _reopen(self) -> None:
        self.container.close()
        self.container = av.open(str(self.path))
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.set_decoding_threads(self._decoding_threads)
        self.audio_streams = list(self.container.streams.audio)

    def frame_at(self, index: int) -> np.ndarray:
        """The ``index``-th frame (0-based), decoding from the start."""
        for frame in self.frames():
            if frame.index == index:
                return frame.image
        raise CopartError(f"{self.what} {self.path} has no frame {index}.")

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def probe(path) -> dict:
    """Frame count, rate, duration, size and streams of a video (for tests and summaries)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        container.seek(0)
        info = {
            "frames": frames,
            "fps": Fraction(video.average_rate) if video.average_rate else None,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "pix_fmt": video.codec_context.pix_fmt,
            "codec": video.codec_context.name,
            "duration": float(video.duration * video.time_base) if video.duration else None,
            "audio": [
                {
                    "codec": a.codec_context.name,
                    "duration": float(a.duration * a.time_base) if a.duration else None,
                    "sample_rate": a.codec_context.sample_rate,
                }
                for a in container.streams.audio
            ],
        }
    return info

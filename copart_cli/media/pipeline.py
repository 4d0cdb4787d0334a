"""The streaming frame pipeline shared by swap and segment.

``decode -> face crop / resize -> model batch -> paste back -> encode``: each stage
hands the next one a frame or a batch; no stage holds a whole video. What runs on the
batches is a plain callable (``copart.inference``); this module knows no model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import cv2
import numpy as np

from copart.models.errors import CopartError

from . import render
from .faces import FaceTrack, crop, paste, paste_all
from .write import VideoWriter, write_image

# Progress reports: ``progress(done, total)`` (total None while unknown).
Progress = Callable[[int, Optional[int]], None]

WHOLE = "whole"  # the region of a frame processed without cropping


@dataclass
class Stats:
    frames: int = 0
    processed: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def passed_through(self) -> int:
        return self.frames - self.processed


def regions(frames: Iterable, track: Optional[FaceTrack]) -> Iterator[tuple[object, object]]:
    """``(frame, region)`` with region a :class:`Box`, ``WHOLE`` (no cropping), None (no face),
    or with ``--face all`` a ``{face number: Box}`` dict (several faces, each on its own crop)."""
    if track is None:
        for frame in frames:
            yield frame, WHOLE
    else:
        yield from track.track(frames)


def take(image: np.ndarray, region, size: int) -> np.ndarray:
    """The model's input for a region of a frame: ``(size, size, 3)`` uint8."""
    if region is WHOLE:
        interpolation = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
        return cv2.resize(image, (size, size), interpolation=interpolation)
    return crop(image, region, size)


def put(image: np.ndarray, patch, region) -> np.ndarray:
    """The frame with the model's output for ``region`` put back (for a dict of regions, a dict
    of outputs with the same keys, pasted in one pass)."""
    if isinstance(region, dict):
        return paste_all(image, [patch[k] for k in region], list(region.values()))
    if region is WHOLE:
        h, w = image.shape[:2]
        interpolation = cv2.INTER_AREA if patch.shape[0] > max(h, w) else cv2.INTER_LINEAR
        return cv2.resize(patch, (w, h), interpolation=interpolation)
    return paste(image, patch, region)


def frame_maps(maps: np.ndarray, region, shape) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Part maps ``(K+1, h, w)`` resized to where they belong in a frame of ``shape``:
    ``(maps, (x0, y0, x1, y1))`` with the maps covering exactly that (clipped) rectangle;
    the rest of the frame is background."""
    h, w = shape[:2]
    if region is WHOLE:
        return render.resize_maps(maps, w, h), (0, 0, w, h)
    x0, y0, x1, y1 = region.bounds()
    side = x1 - x0
    full = render.resize_maps(maps, side, side)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return full[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], (cx0, cy0, cx1, cy1)


def batched_apply(
    items: Iterable[tuple[object, object]],
    size: int,
    batch_size: int,
    apply: Callable[[list[np.ndarray]], list[np.ndarray]],
    image_of=lambda f: f.image,
) -> Iterator[tuple[object, object, Optional[np.ndarray]]]:
    """Run ``apply`` on batches of model-sized crops; yield ``(frame, region, output)`` in
    order (output None where the frame has no region; for a dict of regions, a dict of
    outputs: every face of a frame is its own crop in the batch)."""
    pending: list = []
    count = 0

    def flush():
        crops = []
        for f, r in pending:
            if isinstance(r, dict):
                image = image_of(f)
                crops += [take(image, box, size) for box in r.values()]
            elif r is not None:
                crops.append(take(image_of(f), r, size))
        outputs = iter(apply(crops) if crops else [])
        for f, r in pending:
            if isinstance(r, dict):
                yield f, r, {k: next(outputs) for k in r}
            else:
                yield f, r, (next(outputs) if r is not None else None)
        pending.clear()

    for frame, region in items:
        pending.append((frame, region))
        count += len(region) if isinstance(region, dict) else region is not None
        if count >= batch_size or len(pending) >= 4 * batch_size:
            yield from flush()
            count = 0
    if pending:
        yield from flush()


def stream_video(
    reader,
    out_path,
    outputs: Callable[[Iterator], Iterator[tuple[object, np.ndarray, bool]]],
    crf: int = 18,
    progress: Optional[Progress] = None,
    notice: Callable[[str], None] = lambda text: None,
) -> Stats:
    """Decode ``reader``, turn its frames into output images with ``outputs`` (which yields
    ``(frame, image, processed)`` in order) and encode them to ``out_path`` with the input's
    timestamps and sound. On any error or Ctrl-C nothing is left under ``out_path``."""
    stats = Stats()
    writer = None
    pending_audio: list = []

    def on_audio(packet, offset):
        if writer is None:
            pending_audio.append(packet)
        else:
            writer.write_audio(packet, offset or 0.0)

    frames = reader.frames(on_audio=on_audio)
    try:
        if progress is not None:
            progress(0, reader.estimated_frames)
        for frame, image, processed in outputs(frames):
            if writer is None:
                writer = VideoWriter(out_path, image.shape[1], image.shape[0], reader.fps, frame.time_base,
                                     reader.audio_streams, crf=crf)
                for text in writer.notices:
                    notice(text)
                for packet in pending_audio:
                    writer.write_audio(packet, reader.offset or 0.0)
                pending_audio.clear()
            writer.write(image, frame.pts)
            stats.frames += 1
            stats.processed += bool(processed)
            if progress is not None:
                progress(stats.frames, reader.estimated_frames)
        if writer is None:
            raise CopartError(f"{reader.what} {reader.path} has no frames.")
        writer.close()
        if progress is not None:
            progress(stats.frames, stats.frames)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        frames.close()
    return stats


def process_still(reader, out_path, outputs) -> Stats:
    """The one frame of a still image through ``outputs``, written to ``out_path``."""
    stats = Stats()
    for _, image, processed in outputs(reader.frames()):
        write_image(image, out_path)
        stats.frames, stats.processed = 1, int(processed)
    return stats

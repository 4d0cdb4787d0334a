"""The streaming frame pipeline shared by swap and segment.

``decode -> face crop / resize -> model batch -> paste back -> encode``: each stage
hands the next one a frame or a batch; no stage holds a whole video. What runs on the
batches is a plain callable (``copart.inference``); this module knows no model.

The stages overlap (:func:`stream_video`): decoding, face detection and cropping run in
a thread ahead of the model, encoding in a thread behind it, joined by bounded queues
(memory stays flat) that keep the frames' order. FFmpeg, OpenCV and PyTorch release the
GIL in their work, so on a GPU the model need not wait for the CPU, and on a CPU the
model's threads are idle less. An error in any stage, or Ctrl-C, stops them all and
leaves nothing written.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

import cv2
import numpy as np

from copart.models.errors import CopartError

from . import render
from .faces import FaceTrack, crop, paste, paste_all
from .region import WHOLE, Region
from .write import VideoWriter, write_image

# Progress reports: ``progress(done, total)`` (total None while unknown).
Progress = Callable[[int, Optional[int]], None]

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


def regions(frames: Iterable, track: Optional[FaceTrack]) -> Iterator[tuple[object, Region]]:
    """``(frame, region)``: the :class:`Region` of each frame, ``WHOLE`` without a track (no
    cropping), else the track's faces (one, none, or with ``--face all`` each on its own crop).
    The functions below take a region, or what :meth:`Region.of` turns into one."""
    if track is None:
        for frame in frames:
            yield frame, WHOLE
    else:
        for frame, found in track.track(frames):
            yield frame, Region.of(found)


def take(image: np.ndarray, region, size: int) -> np.ndarray:
    """The model's input for a one-crop region of a frame (or a :class:`Box`): ``(size, size, 3)`` uint8."""
    region = Region.of(region)
    if region.whole:
        interpolation = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
        return cv2.resize(image, (size, size), interpolation=interpolation)
    return crop(image, region.box, size)


def put(image: np.ndarray, patch, region) -> np.ndarray:
    """The frame with the model's output for ``region`` put back (for several faces, a dict of
    outputs by face number, pasted in one pass)."""
    region = Region.of(region)
    if region.several:
        return paste_all(image, [patch[k] for k, _ in region.boxes], [box for _, box in region.boxes])
    if region.whole:
        h, w = image.shape[:2]
        interpolation = cv2.INTER_AREA if patch.shape[0] > max(h, w) else cv2.INTER_LINEAR
        return cv2.resize(patch, (w, h), interpolation=interpolation)
    return paste(image, patch, region.box)


def frame_maps(maps: np.ndarray, region, shape) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Part maps ``(K+1, h, w)`` resized to where they belong in a frame of ``shape``:
    ``(maps, (x0, y0, x1, y1))`` with the maps covering exactly that (clipped) rectangle;
    the rest of the frame is background."""
    h, w = shape[:2]
    region = Region.of(region)
    if region.whole:
        return render.resize_maps(maps, w, h), (0, 0, w, h)
    x0, y0, x1, y1 = region.box.bounds()
    side = x1 - x0
    full = render.resize_maps(maps, side, side)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return full[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], (cx0, cy0, cx1, cy1)


def with_crops(items: Iterable[tuple[object, object]], size: int,
               image_of=lambda f: f.image) -> Iterator[tuple[object, object, Optional[np.ndarray]]]:
    """``(frame, region, crop)``: each region's model input taken from its frame ahead of the
    model (None where the frame has no region), for :func:`batched_apply`."""
    for frame, region in items:
        r = Region.of(region)
        if r.several:
            image = image_of(frame)
            yield frame, region, {k: take(image, box, size) for k, box in r.boxes}
        else:
            yield frame, region, (take(image_of(frame), r, size) if not r.empty else None)


def batched_apply(
    items: Iterable[tuple],
    size: int,
    batch_size: int,
    apply: Callable[[list[np.ndarray]], list[np.ndarray]],
    image_of=lambda f: f.image,
) -> Iterator[tuple[object, object, Optional[np.ndarray]]]:
    """Run ``apply`` on batches of model-sized crops; yield ``(frame, region, output)`` in
    order (output None where the frame has no face; for several faces, a dict of outputs by face
    number: every face of a frame is its own crop in the batch). Items are ``(frame, region)``,
    or ``(frame, region, crop)`` with the crop (a dict of crops for several faces) already
    taken (:func:`with_crops`); each region is given back as it came."""
    pending: list = []
    count = 0

    def flush():
        crops = []
        for f, given, c in pending:
            r = Region.of(given)
            if r.several:
                crops += [c[k] if c is not None else take(image_of(f), box, size) for k, box in r.boxes]
            elif not r.empty:
                crops.append(c if c is not None else take(image_of(f), r, size))
        outputs = iter(apply(crops) if crops else [])
        for f, given, _ in pending:
            r = Region.of(given)
            if r.several:
                yield f, given, {k: next(outputs) for k, _ in r.boxes}
            else:
                yield f, given, (next(outputs) if not r.empty else None)
        pending.clear()

    for item in items:
        frame, region = item[0], item[1]
        pending.append((frame, region, item[2] if len(item) > 2 else None))
        count += Region.of(region).crops
        if count >= batch_size or len(pending) >= 4 * batch_size:
            yield from flush()
            count = 0
    if pending:
        yield from flush()


class _Stage:
    """One background thread of the pipeline; ``stop`` (shared by all stages) ends it."""

    POLL = 0.05  # seconds between looks at ``stop`` while waiting on a queue

    def __init__(self, stop: threading.Event, depth: int, name: str):
        self.stop = stop
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _put(self, item) -> bool:
        """Queue ``item``, waiting while the queue is full; False once the pipeline stops."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=self.POLL)
                return True
            except queue.Full:
                if self.error is not None:
                    return False
        return False

    def join(self) -> None:
        while self.thread.is_alive():
            self.thread.join(timeout=1.0)

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


_END = object()


class Ahead(_Stage):
    """Iterates ``items`` in a thread, up to ``depth`` items ahead of whoever iterates this
    (in order); an exception there is raised here."""

    def __init__(self, items: Iterable, depth: int, stop: threading.Event, name: str = "copart-decode"):
        super().__init__(stop, depth, name)
        self.items = items
        self.thread.start()

    def _run(self) -> None:
        items = self.items
        try:
            for item in items:
                if not self._put((True, item)):
                    return
            self._put((True, _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # here, in the thread that ran it

    def __iter__(self) -> Iterator:
        while True:
            try:
                ok, item = self.queue.get(timeout=self.POLL)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    if self.stop.is_set():
                        return
                    raise RuntimeError("the decoding thread ended without its last word") from None
                continue
            if not ok:
                raise item
            if item is _END:
                return
            yield item


class Behind(_Stage):
    """Runs ``handle(item)`` in a thread for each item :meth:`put` (in order), up to ``depth``
    waiting; its exception is raised by the next :meth:`put` or by :meth:`finish`."""

    def __init__(self, handle: Callable[[Any], None], depth: int, stop: threading.Event,
                 name: str = "copart-encode"):
        super().__init__(stop, depth, name)
        self.handle = handle
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=self.POLL)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if item is _END:
                return
            try:
                self.handle(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the main thread
                self.error = exc
                return

    def put(self, item) -> None:
        if self.error is None and not self._put(item) and self.error is None:
            raise RuntimeError("the encoding thread stopped")
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        """Wait until every item is handled; raise what went wrong there."""
        if self.error is None:
            self._put(_END)
        self.join()
        if self.error is not None:
            raise self.error


def _until(stop: threading.Event, frames: Iterable) -> Iterator:
    for frame in frames:
        if stop.is_set():
            return
        yield frame


# Queue depths: frames decoded (and cropped) ahead of the model, and outputs waiting for the
# encoder. Bounded, so that memory does not grow with the video: at most this many frames wait.
AHEAD = 8
BEHIND = 8

# Threads of the I/O libraries (FFmpeg's decoder, x264, OpenCV) while the model computes on the
# CPU: one each, so that the network's compute threads keep every core and the decoding and
# encoding run in their gaps. Left to the libraries (FFmpeg: 3 decoding threads, x264: 6 on a
# 2-core machine; OpenCV: one per core) every one of them competes with the network's threads,
# and an OpenMP parallel region waits for its slowest thread (benchmarks/profile_swap.py;
# docs/speed.md). With the model on a GPU the CPU is the I/O's: the libraries choose.
IO_THREADS_WITH_CPU_MODEL = 1


def io_threads_for(device) -> Optional[int]:
    """The I/O libraries' threads while the model runs on ``device`` (None: the libraries' own
    choice): :data:`IO_THREADS_WITH_CPU_MODEL` when the model computes on the CPU."""
    return IO_THREADS_WITH_CPU_MODEL if str(device).split(":")[0] == "cpu" else None


def stream_video(
    reader,
    out_path,
    outputs: Callable[[Iterator], Iterator[tuple[object, np.ndarray, bool]]],
    crf: int = 18,
    progress: Optional[Progress] = None,
    notice: Callable[[str], None] = lambda text: None,
    prepare: Optional[Callable[[Iterator], Iterator]] = None,
    ahead: int = AHEAD,
    io_threads: Optional[int] = None,
) -> Stats:
    """Decode ``reader``, turn its frames into output images with ``outputs`` (which yields
    ``(frame, image, processed)`` in order) and encode them to ``out_path`` with the input's
    timestamps and sound. On any error or Ctrl-C nothing is left under ``out_path``.

    Three threads: decoding (and ``prepare``, which maps the decoded frames to what
    ``outputs`` takes: face tracking, crops) runs up to ``ahead`` items ahead of
    ``outputs`` (the model, in the calling thread), and encoding runs behind it.
    ``io_threads`` (see :func:`io_threads_for`) caps the threads of the decoder, the encoder and
    OpenCV for this run (None: the libraries choose)."""
    stats = Stats()
    restore_cv2 = None
    if io_threads is not None:
        set_decoding_threads = getattr(reader, "set_decoding_threads", None)
        if set_decoding_threads is not None:
            set_decoding_threads(io_threads)
        restore_cv2 = cv2.getNumThreads()
        cv2.setNumThreads(io_threads)
    stop = threading.Event()
    lock = threading.Lock()  # the writer's muxer, shared by the audio (decoding thread) and the video
    state: dict = {"writer": None}
    pending_audio: list = []

    def on_audio(packet, offset):  # in the decoding thread
        with lock:
            if state["writer"] is None:
                pending_audio.append(packet)
            else:
                state["writer"].write_audio(packet, offset or 0.0)

    def encode(item):  # in the encoding thread
        image, pts = item
        state["writer"].write(image, pts)

    frames = reader.frames(on_audio=on_audio)
    source = _until(stop, frames)
    decoded = Ahead(prepare(source) if prepare is not None else source, ahead, stop)
    encoder: Optional[Behind] = None
    writer = None  # aborted on any error, from the moment it exists (its file is temporary until close)
    try:
        if progress is not None:
            progress(0, reader.estimated_frames)
        for frame, image, processed in outputs(iter(decoded)):
            if encoder is None:
                writer = VideoWriter(out_path, image.shape[1], image.shape[0], reader.fps, frame.time_base,
                                     reader.audio_streams, crf=crf)
                if io_threads is not None:  # before the first frame opens the encoder
                    writer.stream.codec_context.thread_count = io_threads
                for text in writer.notices:
                    notice(text)
                writer.mux_lock = lock
                with lock:
                    state["writer"] = writer
                    for packet in pending_audio:
                        writer.write_audio(packet, reader.offset or 0.0)
                    pending_audio.clear()
                encoder = Behind(encode, BEHIND, stop)
            encoder.put((image, frame.pts))
            stats.frames += 1
            stats.processed += bool(processed)
            if progress is not None:
                progress(stats.frames, reader.estimated_frames)
        if encoder is None:
            raise CopartError(f"{reader.what} {reader.path} has no frames.")
        encoder.finish()
        decoded.join()
        with lock:
            state["writer"].close()
        if progress is not None:
            progress(stats.frames, stats.frames)
    except BaseException:
        stop.set()
        decoded.join()
        if encoder is not None:
            encoder.join()
        if writer is not None:
            writer.abort()
        raise
    finally:
        stop.set()
        decoded.join()
        if encoder is not None:
            encoder.join()
        frames.close()
        if restore_cv2 is not None:
            cv2.setNumThreads(restore_cv2)
    return stats


def process_still(reader, out_path, outputs, prepare=None) -> Stats:
    """The one frame of a still image through ``outputs`` (after ``prepare``), written to ``out_path``."""
    stats = Stats()
    frames = reader.frames()
    for _, image, processed in outputs(prepare(frames) if prepare is not None else frames):
        write_image(image, out_path)
        stats.frames, stats.processed = 1, int(processed)
    return stats

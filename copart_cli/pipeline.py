"""The streaming frame pipeline shared by the video commands.

``decode -> face crop / resize -> model batch -> paste back -> encode``: each stage
hands the next one a frame or a batch; no stage holds a whole video.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from models.errors import CopartError
from models.model import CoPartModel

from .faces import FaceTrack, crop, paste

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
    """``(frame, region)`` with region a :class:`Box`, ``WHOLE`` (no cropping) or None (no face)."""
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


def put(image: np.ndarray, patch: np.ndarray, region) -> np.ndarray:
    """The frame with the model's output for ``region`` put back."""
    if region is WHOLE:
        h, w = image.shape[:2]
        interpolation = cv2.INTER_AREA if patch.shape[0] > max(h, w) else cv2.INTER_LINEAR
        return cv2.resize(patch, (w, h), interpolation=interpolation)
    return paste(image, patch, region)


def batched_apply(
    items: Iterable[tuple[object, object]],
    size: int,
    batch_size: int,
    apply: Callable[[list[np.ndarray]], list[np.ndarray]],
    image_of=lambda f: f.image,
) -> Iterator[tuple[object, object, Optional[np.ndarray]]]:
    """Run ``apply`` on batches of model-sized crops; yield ``(frame, region, output)`` in
    order (output None where the frame has no region)."""
    pending: list = []
    count = 0

    def flush():
        crops = [take(image_of(f), r, size) for f, r in pending if r is not None]
        outputs = iter(apply(crops) if crops else [])
        for f, r in pending:
            yield f, r, (next(outputs) if r is not None else None)
        pending.clear()

    for frame, region in items:
        pending.append((frame, region))
        count += region is not None
        if count >= batch_size or len(pending) >= 4 * batch_size:
            yield from flush()
            count = 0
    if pending:
        yield from flush()


def to_tensor(images: Sequence[np.ndarray], device, channels_last: bool = False) -> torch.Tensor:
    """``(B, 3, S, S)`` float in [0, 1] from RGB uint8 arrays."""
    batch = torch.from_numpy(np.stack(images)).to(device, non_blocking=True)
    batch = batch.permute(0, 3, 1, 2).float().div_(255)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch.contiguous()


def to_images(batch: torch.Tensor) -> list[np.ndarray]:
    """RGB uint8 arrays from ``(B, 3, S, S)`` in [0, 1]."""
    out = batch.detach().float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(out)


def autocast(device: str, precision: str):
    """A mixed-precision context for ``precision`` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class PartSwapper:
    """Swaps ``parts`` of one source face into batches of target crops.

    The source is segmented and encoded once (:meth:`CoPartModel.prepare_source`);
    each call does only the target work.
    """

    def __init__(
        self,
        model: CoPartModel,
        source: np.ndarray,
        parts: Sequence[int],
        device: str = "cpu",
        precision: str = "fp32",
        hard: bool = False,
        source_mask: bool = False,
    ):
        self.model = model.eval()
        self.device = device
        self.precision = precision
        self.parts = list(parts)
        self.hard = hard
        self.source_mask = source_mask
        self.channels_last = torch.device(device).type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, precision):
            self.source = model.prepare_source(to_tensor([source], device, self.channels_last))

    def __call__(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode(), autocast(self.device, self.precision):
            target = to_tensor(crops, self.device, self.channels_last)
            out = self.model.swap(self.source, target, self.parts, hard=self.hard,
                                  use_source_segmentation=self.source_mask)
        return to_images(out)


def progress_bar(console: Console, unit: str = "frames") -> Progress:
    """A progress bar with items done, items/s and time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]}} {unit}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def stream_video(
    reader,
    out_path,
    outputs: Callable[[Iterator], Iterator[tuple[object, np.ndarray, bool]]],
    console: Console,
    description: str,
    crf: int = 18,
) -> Stats:
    """Decode ``reader``, turn its frames into output images with ``outputs`` (which yields
    ``(frame, image, processed)`` in order) and encode them to ``out_path`` with the input's
    timestamps and sound. On any error or Ctrl-C nothing is left under ``out_path``."""
    from . import video

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
        with progress_bar(console) as bar:
            task = bar.add_task(description, total=reader.estimated_frames, rate="-")
            for frame, image, processed in outputs(frames):
                if writer is None:
                    writer = video.VideoWriter(out_path, image.shape[1], image.shape[0], reader.fps,
                                               frame.time_base, reader.audio_streams, crf=crf)
                    for notice in writer.notices:
                        console.print(f"[yellow]Notice:[/] {notice}.")
                    for packet in pending_audio:
                        writer.write_audio(packet, reader.offset or 0.0)
                    pending_audio.clear()
                writer.write(image, frame.pts)
                stats.frames += 1
                stats.processed += bool(processed)
                bar.update(task, advance=1, rate=f"{stats.frames / max(stats.seconds, 1e-9):.2f}")
            bar.update(task, total=stats.frames)
        if writer is None:
            raise CopartError(f"{reader.what} {reader.path} has no frames.")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        frames.close()
    return stats

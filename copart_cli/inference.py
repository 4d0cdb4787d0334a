"""The model on batches of images: tensors in and out, the precision policy, and the two
callables the frame pipeline runs (:class:`PartSwapper`, :class:`Segmenter`)."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from copart.models.model import CoPartModel


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
        keep_outside: bool = False,
    ):
        self.model = model.eval()
        self.keep_outside = keep_outside
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


class Segmenter:
    """Part maps, anchors and matrices of batches of crops (float16-rounded part maps)."""

    def __init__(self, model: CoPartModel, device: str, precision: str):
        self.model = model.eval()
        self.device = device
        self.precision = precision

    def __call__(self, crops: list[np.ndarray]) -> list[dict]:
        with torch.inference_mode(), autocast(self.device, self.precision):
            seg = self.model.segment(to_tensor(crops, self.device))
        maps = seg.segmentation.float().cpu().numpy().astype(np.float16)
        shift = seg.shift.float().cpu().numpy()
        affine = seg.affine.float().cpu().numpy() if seg.affine is not None else None
        return [
            {"segmentation": maps[i], "shift": shift[i], **({"affine": affine[i]} if affine is not None else {})}
            for i in range(len(crops))
        ]

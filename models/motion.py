"""Part motion, the flow and the visibility (paper Eq. 2-5).

All coordinates are in [-1, 1], x first, on the grid ``x = 2 i / (W - 1) - 1``.
Warping samples bilinearly with ``align_corners=True`` so that an identity flow
returns its input exactly, as the published checkpoints were trained
(PyTorch 1.0's ``grid_sample``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import make_coordinate_grid
from .segmentation import PartSegmentation


def inverse_2x2(matrix: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of ``(..., 2, 2)`` matrices (any float dtype)."""
    a, b = matrix[..., 0, 0], matrix[..., 0, 1]
    c, d = matrix[..., 1, 0], matrix[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def segment_motion(seg_target: PartSegmentation, seg_source: PartSegmentation) -> torch.Tensor:
    """Eq. 2, per part: ``F^k(z) = p_S^k + A_S^k (A_T^k)^-1 (z - p_T^k)``.

    Returns ``(B, K+1, H', W', 2)``: channel 0 is the background's identity
    motion, channels 1..K the parts' motions, at the part maps' resolution.
    """
    b, _, h, w = seg_target.segmentation.shape
    k = seg_target.shift.shape[1]
    grid = make_coordinate_grid(h, w, dtype=seg_target.shift.dtype, device=seg_target.shift.device)
    z = grid.view(1, 1, h, w, 2) - seg_target.shift.view(b, k, 1, 1, 2)
    if seg_target.affine is not None:
        matrix = seg_source.affine @ inverse_2x2(seg_target.affine)  # (B, K, 2, 2)
        z = torch.einsum("bkij,bkhwj->bkhwi", matrix, z)
    motion = z + seg_source.shift.view(-1, k, 1, 1, 2)
    background = grid.view(1, 1, h, w, 2).expand(motion.shape[0], 1, h, w, 2)
    return torch.cat([background, motion], dim=1)


def flow(seg_target: PartSegmentation, seg_source: PartSegmentation) -> torch.Tensor:
    """Eq. 3: ``F = sum_k Y_T^k F^k`` over all K+1 channels. Returns ``(B, H', W', 2)``,
    in float32 even under mixed precision."""
    with torch.autocast(device_type=seg_target.shift.device.type, enabled=False):
        seg_target, seg_source = seg_target.to(torch.float32), seg_source.to(torch.float32)
        motions = segment_motion(seg_target, seg_source)
        return torch.einsum("bkhw,bkhwc->bhwc", seg_target.segmentation, motions)


def visibility(seg_source: PartSegmentation, seg_target: PartSegmentation, backprop: bool = False) -> torch.Tensor:
    """Eq. 4: ``V = 1 - O_S (1 - O_T)`` with O the foreground (sum of the K part maps).

    ``(B, 1, H', W')``. The target term carries no gradient unless ``backprop``
    (the paper's "V-back-prop" ablation).
    """
    target_foreground = seg_target.foreground
    if not backprop:
        target_foreground = target_foreground.detach()
    return 1 - seg_source.foreground * (1 - target_foreground)


def resize_flow(deformation: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample a ``(B, H', W', 2)`` flow to ``size`` (as the authors do)."""
    if tuple(deformation.shape[1:3]) == tuple(size):
        return deformation
    resized = F.interpolate(deformation.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1)


def warp(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Back-warp ``(B, C, H, W)`` by a flow ``(B, H', W', 2)`` (resized to H, W when needed).

    Sampling runs in float32 whatever ``inp``'s dtype (a bf16 grid would misplace
    samples by a tenth of a pixel); the result has ``inp``'s dtype.
    """
    with torch.autocast(device_type=inp.device.type, enabled=False):
        deformation = resize_flow(deformation.float(), inp.shape[2:])
        if inp.shape[0] != deformation.shape[0]:
            inp = inp.expand(deformation.shape[0], *inp.shape[1:])
        out = F.grid_sample(inp.float(), deformation, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(inp.dtype)


def resize_map(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinearly resample ``(B, C, H', W')`` maps to ``size`` when they differ (as the authors do)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

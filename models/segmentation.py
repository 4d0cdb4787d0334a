"""The segmentation module (paper Sec. 3.1, Supp. A).

For a frame it predicts K+1 soft part maps (channel 0 = background) and, per part,
an anchor point ``shift`` (the soft-argmax of a heatmap, [-1, 1], x first) and a
2x2 ``affine`` matrix averaged under the same heatmap.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AntiAliasInterpolation2d, Hourglass, make_coordinate_grid


class PartSegmentation(NamedTuple):
    """What the segmentation module says of a batch of frames.

    segmentation: ``(B, K+1, H', W')`` soft part maps, summing to 1 over channels.
    shift: ``(B, K, 2)`` part anchors p^k in [-1, 1], x first.
    affine: ``(B, K, 2, 2)`` part matrices A^k, or None for a shift-only model.
    """

    segmentation: torch.Tensor
    shift: torch.Tensor
    affine: Optional[torch.Tensor]

    def expand(self, batch: int) -> "PartSegmentation":
        """Broadcast a batch of one to ``batch`` (views, no copies)."""
        return PartSegmentation(*(None if t is None else t.expand(batch, *t.shape[1:]) for t in self))

    def to(self, *args, **kwargs) -> "PartSegmentation":
        return PartSegmentation(*(None if t is None else t.to(*args, **kwargs) for t in self))

    @property
    def foreground(self) -> torch.Tensor:
        """``(B, 1, H', W')``: O, the sum of the K part maps."""
        return self.segmentation[:, 1:].sum(dim=1, keepdim=True)


class SegmentationModule(nn.Module):
    """``(B, C, H, W)`` frames in [0, 1] -> :class:`PartSegmentation` at ``scale_factor`` resolution."""

    def __init__(
        self,
        num_segments: int,
        num_channels: int = 3,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        temperature: float = 0.1,
        estimate_affine_part: bool = True,
        scale_factor: float = 0.25,
        part_temperature: float = 1.0,
        region_estimate: str = "regressed",
    ):
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        features = self.predictor.out_filters
        self.num_segments = num_segments
        self.shift = nn.Conv2d(features, num_segments, kernel_size=7, padding=3)
        if estimate_affine_part:
            self.affine = nn.Conv2d(features, 4 * num_segments, kernel_size=7, padding=3)
            # Start every part at the identity matrix.
            with torch.no_grad():
                self.affine.weight.zero_()
                self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * num_segments))
        else:
            self.affine = None
        self.segmentation = nn.Conv2d(features, num_segments + 1, kernel_size=7, padding=3)
        self.temperature = temperature
        self.part_temperature = part_temperature
        self.region_estimate = region_estimate
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, frame: torch.Tensor) -> PartSegmentation:
        if self.scale_factor != 1:
            frame = self.down(frame)
        features = self.predictor(frame)
        logits = self.shift(features)
        segmentation_logits = self.segmentation(features)
        affine_maps = self.affine(features) if self.affine is not None else None
        # Part maps, anchors and matrices in float32 even under mixed precision: the
        # anchors are coordinates, and bf16 would round them to a tenth of a pixel.
        with torch.autocast(device_type=frame.device.type, enabled=False):
            segmentation_logits = segmentation_logits.float()
            if self.part_temperature != 1:
                segmentation_logits = segmentation_logits / self.part_temperature
            segmentation = F.softmax(segmentation_logits, dim=1)
            b, k, h, w = logits.shape
            if self.region_estimate == "moments":
                shift, affine = region_moments(segmentation[:, 1:], self.affine is not None)
                return PartSegmentation(segmentation, shift, affine)
            heatmap = F.softmax(logits.float().view(b, k, -1) / self.temperature, dim=2)
            grid = make_coordinate_grid(h, w, dtype=heatmap.dtype, device=heatmap.device).view(h * w, 2)
            shift = heatmap @ grid  # soft-argmax, (B, K, 2)
            affine = None
            if affine_maps is not None:
                maps = affine_maps.float().view(b, k, 4, h * w)
                affine = (maps @ heatmap.unsqueeze(-1)).view(b, k, 2, 2)
        return PartSegmentation(segmentation, shift, affine)


def region_moments(parts: torch.Tensor, affine: bool = True, eps: float = 1e-6):
    """Each part's anchor and matrix from its own map ``(B, K, h, w)``: the mean position and,
    from the covariance's eigen-decomposition ``U S U^T``, ``A = U sqrt(S)`` (as Motion
    Representations for Articulated Animation does). The 2x2 eigen-decomposition is written in
    closed form, kept differentiable where eigenvalues meet; U is a rotation (det 1)."""
    b, k, h, w = parts.shape
    grid = make_coordinate_grid(h, w, dtype=parts.dtype, device=parts.device).view(1, 1, h * w, 2)
    weights = parts.reshape(b, k, h * w)
    weights = weights / (weights.sum(dim=2, keepdim=True) + eps)
    shift = (weights.unsqueeze(-1) * grid).sum(dim=2)
    if not affine:
        return shift, None
    centred = grid - shift.unsqueeze(2)
    xx = (weights * centred[..., 0] ** 2).sum(2)
    yy = (weights * centred[..., 1] ** 2).sum(2)
    xy = (weights * centred[..., 0] * centred[..., 1]).sum(2)
    # 2 theta is the angle of (xx - yy, 2 xy); (cos theta, sin theta) is the normalised half-angle vector.
    r = torch.sqrt((xx - yy) ** 2 + 4 * xy**2 + eps**2)
    cos2, sin2 = (xx - yy) / r, 2 * xy / r
    half = torch.stack([1 + cos2 + eps, sin2], -1)
    half = half / half.norm(dim=-1, keepdim=True)
    c, s = half[..., 0], half[..., 1]
    mean = (xx + yy) / 2
    first = torch.sqrt((mean + r / 2).clamp_min(0) + eps)
    second = torch.sqrt((mean - r / 2).clamp_min(0) + eps)
    matrix = torch.stack([torch.stack([c * first, -s * second], -1), torch.stack([s * first, c * second], -1)], -2)
    return shift, matrix

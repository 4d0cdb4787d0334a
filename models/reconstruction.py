"""The reconstruction module (paper Sec. 3.2, Supp. A) and part swap (Sec. 4.3).

Johnson-style encoder-decoder: a 7x7 first block, ``num_down_blocks`` down blocks,
``num_bottleneck_blocks`` residual blocks, as many up blocks, a 7x7 final conv and
a sigmoid. Between encoder and bottleneck the source features are back-warped by
the flow of Eq. 3 and multiplied by the visibility of Eq. 4 (Eq. 5).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import motion
from .blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from .errors import CopartError
from .segmentation import PartSegmentation


class ReconstructionModule(nn.Module):
    """Reconstructs a target frame from a source frame and both frames' segmentations."""

    def __init__(
        self,
        num_segments: int,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        estimate_visibility: bool = True,
        segment_motion: bool = True,
        visibility_backprop: bool = False,
    ):
        super().__init__()
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)

        def width(level: int) -> int:
            return min(max_features, block_expansion * (2**level))

        self.down_blocks = nn.ModuleList(DownBlock2d(width(i), width(i + 1)) for i in range(num_down_blocks))
        self.up_blocks = nn.ModuleList(
            UpBlock2d(width(num_down_blocks - i), width(num_down_blocks - i - 1)) for i in range(num_down_blocks)
        )
        bottleneck_features = width(num_down_blocks)
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(bottleneck_features))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)

        self.num_segments = num_segments
        self.num_channels = num_channels
        self.estimate_visibility = estimate_visibility
        self.segment_motion = segment_motion
        self.visibility_backprop = visibility_backprop
        if not segment_motion:
            # Naive baseline: target part maps concatenated to the source features.
            self.fuse = nn.Conv2d(bottleneck_features + num_segments + 1, bottleneck_features, kernel_size=1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, F, H / 2**d, W / 2**d)``."""
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Bottleneck and decoder: features -> ``(B, C, H, W)`` image in [0, 1]."""
        out = self.bottleneck(features)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out))

    def transfer(
        self,
        source_features: torch.Tensor,
        seg_source: PartSegmentation,
        seg_target: PartSegmentation,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Move source features to the target's pose (Eq. 3-5).

        Returns the warped features ``(B, F, h, w)``, the flow ``(B, H', W', 2)``
        (None for the Naive model) and the visibility ``(B, 1, h, w)`` (None when
        not estimated). ``source_features`` and ``seg_source`` may have batch 1.
        """
        batch = seg_target.segmentation.shape[0]
        size = source_features.shape[2:]
        if not self.segment_motion:
            target_maps = motion.resize_map(seg_target.segmentation, size).to(source_features.dtype)
            features = source_features.expand(batch, *source_features.shape[1:])
            return self.fuse(torch.cat([features, target_maps], dim=1)), None, None
        deformation = motion.flow(seg_target, seg_source)
        out = motion.warp(source_features, deformation)
        vis = None
        if self.estimate_visibility:
            vis = motion.visibility(seg_source, seg_target, backprop=self.visibility_backprop)
            vis = motion.resize_map(vis, size)
            out = out * vis.to(out.dtype)
        return out, deformation, vis

    def forward(
        self, source_image: torch.Tensor, seg_source: PartSegmentation, seg_target: PartSegmentation
    ) -> dict[str, torch.Tensor]:
        """Reconstruct the targets: ``prediction`` ``(B, C, H, W)``, the warped source
        image ``deformed``, ``visibility_maps`` ``(B, 1, h, w)`` and the ``flow``."""
        features, deformation, vis = self.transfer(self.encode(source_image), seg_source, seg_target)
        out = {"prediction": self.decode(features)}
        if deformation is not None:
            out["deformed"] = motion.warp(source_image, deformation)
            out["flow"] = deformation
        if vis is not None:
            out["visibility_maps"] = vis
        return out

    def swap(
        self,
        source_features: torch.Tensor,
        seg_source: PartSegmentation,
        target_image: torch.Tensor,
        seg_target: PartSegmentation,
        blend_mask: torch.Tensor,
        warp_mask: bool = False,
        keep_outside: bool = False,
    ) -> torch.Tensor:
        """Part swap: target features outside the mask, warped source features inside.

        ``blend_mask`` ``(B or 1, 1, H', W')``; with ``warp_mask`` it is a mask on the
        source frame and is warped to the target by the flow first. Returns the
        swapped frames ``(B, C, H, W)``. With ``keep_outside`` (copart's; the paper blends
        features only) the decoded frame is then blended with the target image under the same
        mask, upsampled: outside the chosen parts the target's own pixels stay.
        """
        target_features = self.encode(target_image)
        features, deformation, _ = self.transfer(source_features, seg_source, seg_target)
        if warp_mask:
            if deformation is None:
                raise CopartError("A mask from the source segmentation needs a motion model to warp it; the "
                                  "Naive model has none: use the target's segmentation.", topic="source-mask")
            blend_mask = motion.warp(blend_mask, deformation)
        feature_mask = motion.resize_map(blend_mask, features.shape[2:]).to(features.dtype)
        out = self.decode(target_features * (1 - feature_mask) + features * feature_mask)
        if keep_outside:
            image_mask = motion.resize_map(blend_mask.float(), target_image.shape[2:]).to(out.dtype)
            out = target_image.to(out.dtype) * (1 - image_mask) + out * image_mask
        return out

"""The whole network: segmentation + reconstruction, built from a :class:`ModelConfig`."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from .config import ModelConfig
from .reconstruction import ReconstructionModule
from .segmentation import PartSegmentation, SegmentationModule


class SourceState(NamedTuple):
    """What a part swap needs of its source image, computed once for every frame.

    image: ``(1, C, H, W)``; segmentation: its :class:`PartSegmentation`;
    features: its encoding ``(1, F, h, w)``.
    """

    image: torch.Tensor
    segmentation: PartSegmentation
    features: torch.Tensor


def part_mask(seg: PartSegmentation, parts: Sequence[int], hard: bool = False) -> torch.Tensor:
    """The blend mask M: sum of the chosen channels (0 = background, 1..K parts),
    thresholded at 0.5 when ``hard``. ``(B, 1, H', W')``."""
    channels = seg.segmentation.shape[1]
    bad = [p for p in parts if not 0 <= int(p) < channels]
    if bad or not parts:
        raise ValueError(f"part channels must be in 0..{channels - 1}, got {list(parts)}")
    mask = seg.segmentation[:, list(parts)].sum(dim=1, keepdim=True)
    if hard:
        mask = (mask > 0.5).to(mask.dtype)
    return mask


class CoPartModel(nn.Module):
    """Motion-supervised co-part segmentation (Siarohin et al., 2020).

    ``segmentation_module`` and ``reconstruction_module`` carry the published
    checkpoints' state dicts as they are.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        seg, rec = config.segmentation, config.reconstruction
        self.segmentation_module = SegmentationModule(
            num_segments=config.num_segments,
            num_channels=config.num_channels,
            block_expansion=seg.block_expansion,
            max_features=seg.max_features,
            num_blocks=seg.num_blocks,
            temperature=seg.temperature,
            estimate_affine_part=config.estimate_affine_part,
            scale_factor=seg.scale_factor,
            part_temperature=seg.part_temperature,
            region_estimate=seg.region_estimate,
        )
        self.reconstruction_module = ReconstructionModule(
            num_segments=config.num_segments,
            num_channels=config.num_channels,
            block_expansion=rec.block_expansion,
            max_features=rec.max_features,
            num_down_blocks=rec.num_down_blocks,
            num_bottleneck_blocks=rec.num_bottleneck_blocks,
            estimate_visibility=rec.estimate_visibility,
            segment_motion=rec.segment_motion,
            visibility_backprop=rec.visibility_backprop,
        )

    @property
    def num_segments(self) -> int:
        return self.config.num_segments

    def segment(self, frames: torch.Tensor) -> PartSegmentation:
        """``(B, C, H, W)`` in [0, 1] -> part maps, anchors and matrices."""
        return self.segmentation_module(frames)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> dict:
        """Reconstruct ``target`` from ``source`` (both ``(B, C, H, W)``), as in training.

        Returns the reconstruction module's outputs plus ``seg_source`` and ``seg_target``.
        """
        seg_source = self.segment(source)
        seg_target = self.segment(target)
        out = self.reconstruction_module(source, seg_source, seg_target)
        out["seg_source"] = seg_source
        out["seg_target"] = seg_target
        return out

    def prepare_source(self, image: torch.Tensor) -> SourceState:
        """Segment and encode a swap's source image ``(1, C, H, W)`` once."""
        return SourceState(image, self.segment(image), self.reconstruction_module.encode(image))

    def swap(
        self,
        source: SourceState,
        target: torch.Tensor,
        parts: Sequence[int],
        hard: bool = False,
        use_source_segmentation: bool = False,
        seg_target: PartSegmentation | None = None,
        keep_outside: bool = False,
    ) -> torch.Tensor:
        """Give each target frame ``(B, C, H, W)`` the source's ``parts`` (channel numbers,
        0 = background). The mask comes from the target's part maps, or with
        ``use_source_segmentation`` from the source's, thresholded first when
        ``hard`` and then warped by the flow. With ``keep_outside`` the target's own pixels
        are kept outside the mask (blended in image space after decoding; the paper blends
        features only). Returns ``(B, C, H, W)``."""
        if seg_target is None:
            seg_target = self.segment(target)
        seg_for_mask = source.segmentation if use_source_segmentation else seg_target
        mask = part_mask(seg_for_mask, parts, hard)
        if use_source_segmentation:
            mask = mask.expand(target.shape[0], *mask.shape[1:])
        return self.reconstruction_module.swap(
            source.features, source.segmentation, target, seg_target, mask, warp_mask=use_source_segmentation,
            keep_outside=keep_outside,
        )


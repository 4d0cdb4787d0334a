"""Model configuration in the authors' YAML layout.

A configuration file has ``dataset_params``, ``model_params`` (``common_params``,
``segmentation_module_params``, ``reconstruction_module_params``) and
``train_params``, exactly as the authors' configs, so that a YAML written for
their code loads unchanged. copart reads the keys in :data:`CONFIG_KEYS`; the
authors' others (:data:`AUTHORS_IGNORED_KEYS`) load and do nothing. copart adds
two optional switches to ``reconstruction_module_params`` (``segment_motion`` and
``visibility_backprop``) for the ablations of Table 1(b), ``train_params.loss``
and ``loss_weights.pixel``, and an optional top-level ``part_names`` mapping
(name -> segmentation channels).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from .errors import CopartError

REGION_ESTIMATES = ("regressed", "moments")


@dataclass(frozen=True)
class SegmentationParams:
    """``model_params.segmentation_module_params``."""

    temperature: float = 0.1
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    # copart: softmax temperature of the part maps (the paper's: 1). Below 1 sharpens them.
    part_temperature: float = 1.0
    # copart: where each part's anchor and matrix come from. "regressed" (the paper's): the
    # soft-argmax of a heatmap and a matrix regressed under it; "moments" (Motion Representations
    # for Articulated Animation, Siarohin et al. 2021): the part map's own mean and, from its
    # covariance's principal axes, U sqrt(S).
    region_estimate: str = "regressed"


@dataclass(frozen=True)
class ReconstructionParams:
    """``model_params.reconstruction_module_params``."""

    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    estimate_visibility: bool = True
    # copart: False is the Naive baseline (no motion; the target segmentation is
    # concatenated to the source features at the bottleneck).
    segment_motion: bool = True
    # copart: True lets the gradient flow through the target's background term of
    # the visibility (Table 1(b) "V-back-prop"); the paper's Full model detaches it.
    visibility_backprop: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network: ``model_params`` plus the frame size."""

    num_segments: int
    num_channels: int = 3
    estimate_affine_part: bool = True
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    reconstruction: ReconstructionParams = field(default_factory=ReconstructionParams)
    image_size: tuple[int, int] = (256, 256)

    @classmethod
    def from_dict(cls, config: dict, source: str = "the configuration") -> "ModelConfig":
        """Parse a whole config (authors' layout) or a copart checkpoint's stored one."""
        if not isinstance(config, dict) or not isinstance(config.get("model_params"), dict):
            raise CopartError(f"{source} has no 'model_params' section: it is not a configuration in the authors' layout.")
        model = config["model_params"]
        common = dict(model.get("common_params") or {})
        seg = dict(model.get("segmentation_module_params") or {})
        rec = dict(model.get("reconstruction_module_params") or {})
        # The authors' modules take common_params as keyword arguments too.
        for key in ("num_segments", "num_channels", "estimate_affine_part"):
            seg.pop(key, None)
            rec.pop(key, None)
        if "num_segments" not in common:
            raise CopartError(f"{source} does not set model_params.common_params.num_segments (the number of parts K).")
        _check_keys(seg, SegmentationParams, "segmentation_module_params", source)
        _check_keys(rec, ReconstructionParams, "reconstruction_module_params", source)
        _check_keys(common, None, "common_params", source, allowed={"num_segments", "num_channels", "estimate_affine_part"})
        dataset = config.get("dataset_params") or {}
        shape = dataset.get("image_shape", dataset.get("frame_shape", (256, 256)))
        try:
            image_size = (int(shape[0]), int(shape[1]))
            out = cls(
                num_segments=int(common["num_segments"]),
                num_channels=int(common.get("num_channels", 3)),
                estimate_affine_part=bool(common.get("estimate_affine_part", True)),
                segmentation=SegmentationParams(**seg),
                reconstruction=ReconstructionParams(**rec),
                image_size=image_size,
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise CopartError(f"{source} has a model parameter of the wrong type ({exc}).") from None
        out.validate(source)
        return out

    def validate(self, source: str = "the configuration") -> None:
        if self.num_segments < 1:
            raise CopartError(f"{source} sets num_segments to {self.num_segments}; it must be at least 1.")
        scale = self.segmentation.scale_factor
        if not 0 < scale <= 1:
            raise CopartError(f"{source} sets scale_factor to {scale}; it must be in (0, 1].")
        if self.segmentation.max_features < self.segmentation.block_expansion:
            raise CopartError(f"{source}: segmentation max_features must be at least block_expansion.")
        if self.segmentation.part_temperature <= 0:
            raise CopartError(f"{source} sets part_temperature to {self.segmentation.part_temperature}; it must be positive.")
        if self.segmentation.region_estimate not in REGION_ESTIMATES:
            raise CopartError(f"{source} sets region_estimate to '{self.segmentation.region_estimate}'; choose "
                              f"{' or '.join(REGION_ESTIMATES)}.")
        if self.reconstruction.max_features < self.reconstruction.block_expansion:
            raise CopartError(f"{source}: reconstruction max_features must be at least block_expansion.")

    def model_params(self) -> dict:
        """The authors' ``model_params`` section (plus copart's switches when not default)."""
        rec = asdict(self.reconstruction)
        for key in ("segment_motion", "visibility_backprop"):
            if rec[key] == getattr(ReconstructionParams, key):
                del rec[key]
        seg = asdict(self.segmentation)
        for key in ("part_temperature", "region_estimate"):  # copart's, written only when set
            if seg[key] == getattr(SegmentationParams, key):
                del seg[key]
        return {
            "common_params": {
                "num_segments": self.num_segments,
                "num_channels": self.num_channels,
                "estimate_affine_part": self.estimate_affine_part,
            },
            "segmentation_module_params": seg,
            "reconstruction_module_params": rec,
        }

    def to_dict(self) -> dict:
        """A minimal config in the authors' layout that rebuilds this model."""
        return {
            "dataset_params": {"image_shape": [self.image_size[0], self.image_size[1], self.num_channels]},
            "model_params": self.model_params(),
        }

    @property
    def segmentation_size(self) -> tuple[int, int]:
        """Resolution of the part maps for a frame of ``image_size``."""
        s = self.segmentation.scale_factor
        return (int(self.image_size[0] * s), int(self.image_size[1] * s))


def _check_keys(values: dict, cls, section: str, source: str, allowed: set | None = None) -> None:
    allowed = allowed if allowed is not None else set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise CopartError(
            f"{source} has unknown key(s) {', '.join(unknown)} in model_params.{section} "
            f"(known: {', '.join(sorted(allowed))})."
        )


# Every key of a configuration that copart reads, as a dotted path (``part_names`` is read
# whole: its keys are the user's names). model_params takes exactly these keys (unknown ones
# are refused); the rest are read by the training loop, its data and its losses.
CONFIG_KEYS: frozenset[str] = frozenset(
    {f"model_params.common_params.{k}" for k in ("num_segments", "num_channels", "estimate_affine_part")}
    | {f"model_params.segmentation_module_params.{k}" for k in SegmentationParams.__dataclass_fields__}
    | {f"model_params.reconstruction_module_params.{k}" for k in ReconstructionParams.__dataclass_fields__}
    | {f"dataset_params.{k}" for k in ("image_shape", "frame_shape", "id_sampling", "min_frame_distance")}
    | {f"dataset_params.augmentation_params.flip_param.{k}" for k in ("horizontal_flip", "time_flip")}
    | {f"dataset_params.augmentation_params.jitter_param.{k}" for k in ("brightness", "contrast", "saturation", "hue")}
    | {f"train_params.{k}" for k in ("num_epochs", "num_repeats", "lr_segmentation", "lr_reconstruction",
                                     "batch_size", "scales", "loss", "warmup_steps",
                                     "concentration", "concentration_start")}
    | {f"train_params.transform_params.{k}" for k in ("sigma_affine", "sigma_tps", "points_tps")}
    | {f"train_params.loss_weights.{k}" for k in ("equivariance", "perceptual", "pixel", "concentration")}
    | {"part_names"}
)
# Keys of the authors' configs that copart accepts and ignores: the data folder is an argument of
# copart train, checkpoints are saved by steps and minutes (--checkpoint-every), and training
# pictures are drawn copart's way.
AUTHORS_IGNORED_KEYS: tuple[str, ...] = ("dataset_params.root_dir", "train_params.checkpoint_freq", "visualizer_params")


# Table 1(b) of the paper as configuration switches.
VARIANTS: dict[str, dict] = {
    "full": {"estimate_affine_part": True, "estimate_visibility": True, "visibility_backprop": False, "segment_motion": True},
    "v-back-prop": {"estimate_affine_part": True, "estimate_visibility": True, "visibility_backprop": True, "segment_motion": True},
    "affine-only": {"estimate_affine_part": True, "estimate_visibility": False, "visibility_backprop": False, "segment_motion": True},
    "shift-only": {"estimate_affine_part": False, "estimate_visibility": False, "visibility_backprop": False, "segment_motion": True},
    "naive": {"estimate_affine_part": True, "estimate_visibility": False, "visibility_backprop": False, "segment_motion": False},
}


def apply_variant(config: dict, variant: str) -> dict:
    """A copy of a whole config (authors' layout) switched to an ablation of Table 1(b)."""
    if variant not in VARIANTS:
        raise CopartError(f"Unknown variant '{variant}'; choose one of {', '.join(VARIANTS)}.")
    out = copy.deepcopy(config)
    model = out.setdefault("model_params", {})
    switches = VARIANTS[variant]
    model.setdefault("common_params", {})["estimate_affine_part"] = switches["estimate_affine_part"]
    rec = model.setdefault("reconstruction_module_params", {})
    for key in ("estimate_visibility", "visibility_backprop", "segment_motion"):
        rec[key] = switches[key]
    return out

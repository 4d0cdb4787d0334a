"""Checkpoints in three layouts, read with ``torch.load(..., weights_only=True)``.

- ``authors``: the published files, ``{'segmentation_module', 'reconstruction_module', ...}``;
  they load strictly into a model built from the matching configuration.
- ``fomm``: First Order Motion Model files, ``{'kp_detector', 'generator'}``; an
  initialisation for training (kp -> shift, jacobian -> affine, semantic_seg ->
  segmentation, the generator keys the reconstruction module has).
- ``copart``: copart's own, which also holds the configuration and part names, so
  that the file alone rebuilds the model, and for training the optimizer state.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .config import ModelConfig, ReconstructionParams, SegmentationParams
from .errors import CopartError, first_line
from . import files
from .files import atomic_path
from .model import CoPartModel

FORMAT_VERSION = 1
MODULES = ("segmentation_module", "reconstruction_module")
# torch.load(weights_only=True) can be made to run code below 2.6 (CVE-2025-32434) and below 2.10
# (CVE-2026-24747); copart requires 2.10 (pyproject.toml) and refuses to read a checkpoint on less.
SAFE_TORCH = (2, 10)


def _torch_release(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def check_safe_torch() -> None:
    """One sentence when this PyTorch's ``weights_only`` loading is known to be bypassable."""
    if _torch_release(torch.__version__) < SAFE_TORCH:
        raise CopartError(
            f"PyTorch {torch.__version__} is too old to load checkpoints safely: its torch.load(weights_only=True) "
            f"can be made to run code (CVE-2025-32434, CVE-2026-24747); install torch 2.10 or newer."
        )


def read_checkpoint(path) -> dict:
    """Load a checkpoint file's dict safely; one clear sentence for anything wrong."""
    path = Path(path)
    if not path.exists():
        raise CopartError(f"Checkpoint {path} does not exist.")
    if path.is_dir():
        raise CopartError(f"Checkpoint {path} is a folder, not a file.")
    if path.stat().st_size == 0:
        raise CopartError(f"Checkpoint {path} is empty.")
    check_safe_torch()
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CopartError(f"Checkpoint {path} cannot be read: permission denied.") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError, AttributeError,
            ImportError, KeyError, TypeError, UnicodeDecodeError, IndexError, struct.error) as exc:
        raise _unreadable(path, exc) from None
    if not isinstance(data, dict):
        raise CopartError(f"{path} is not a checkpoint: it holds a {type(data).__name__}, not a dict of state dicts.")
    return data


def _unreadable(path: Path, exc: Exception) -> CopartError:
    """Why ``torch.load`` refused ``path``, told from the file's first bytes, not the error's wording."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):  # a zip archive, as PyTorch >= 1.6 writes
        if not zipfile.is_zipfile(path):  # the directory at its end is missing
            return CopartError(f"{path} is truncated or corrupt (its archive is incomplete); download it again.")
        if isinstance(exc, pickle.UnpicklingError):
            return _holds_objects(path)
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = ["data.pkl"]
        if not any(name.endswith("data.pkl") for name in names):
            return CopartError(f"{path} is a zip archive but not a PyTorch checkpoint (it holds no data.pkl).")
        return CopartError(f"{path} is truncated or corrupt ({first_line(exc)}); download it again.")
    if head[:1] == b"\x80":  # a pickle, as PyTorch < 1.6 wrote (the published files)
        if isinstance(exc, pickle.UnpicklingError):
            return _holds_objects(path)
        return CopartError(f"{path} is truncated or corrupt; download it again.")
    kind = files.describe(head)
    return CopartError(
        f"{path} is not a PyTorch checkpoint: "
        + (f"it looks like {kind}." if kind else "it is neither a zip archive nor a pickle.")
    )


def _holds_objects(path: Path) -> CopartError:
    return CopartError(
        f"{path} holds Python objects besides tensors; copart loads checkpoints only with "
        f"torch.load(weights_only=True) on PyTorch {SAFE_TORCH[0]}.{SAFE_TORCH[1]} or newer, which runs no code "
        f"from a file, and so refuses this one."
    )




def detect_layout(data: dict, path="the checkpoint") -> str:
    """``'copart'``, ``'authors'`` or ``'fomm'``."""
    if "copart" in data and all(m in data for m in MODULES):
        return "copart"
    if all(m in data for m in MODULES):
        return "authors"
    if "kp_detector" in data and "generator" in data:
        return "fomm"
    keys = ", ".join(sorted(map(str, data))[:8]) or "none"
    raise CopartError(
        f"{path} is a checkpoint of no layout copart knows (its top-level keys: {keys}); expected "
        f"segmentation_module and reconstruction_module, or kp_detector and generator."
    )


@dataclass
class LoadedModel:
    """A model with what its checkpoint or preset said about it."""

    model: CoPartModel
    layout: str  # 'copart', 'authors', 'fomm' or 'preset'
    config: dict  # whole configuration, authors' layout
    part_names: dict[str, list[int]] = field(default_factory=dict)
    step: Optional[int] = None
    epoch: Optional[int] = None
    notes: list[str] = field(default_factory=list)
    checkpoint: dict = field(default_factory=dict, repr=False)


def validate_part_names(names, num_segments: int, source: str) -> dict[str, list[int]]:
    """``{name: [channels]}`` with every channel in 0..K."""
    if names is None:
        return {}
    if not isinstance(names, dict):
        raise CopartError(f"{source}: part_names must map names to lists of channel numbers.")
    out = {}
    for name, channels in names.items():
        channels = [channels] if isinstance(channels, int) else channels
        if (
            not isinstance(name, str)
            or not name
            or not isinstance(channels, (list, tuple))
            or not channels
            or not all(isinstance(c, int) and 0 <= c <= num_segments for c in channels)
        ):
            raise CopartError(
                f"{source}: part name {name!r} must map to channel numbers in 0..{num_segments} "
                f"(0 = background, 1..{num_segments} parts)."
            )
        out[name] = [int(c) for c in channels]
    return out


def expected_shapes(config: ModelConfig) -> dict[str, dict[str, tuple]]:
    """Every state-dict key and shape of a model built from ``config`` (no memory allocated)."""
    with torch.device("meta"):
        model = CoPartModel(config)
    return {m: {k: tuple(v.shape) for k, v in getattr(model, m).state_dict().items()} for m in MODULES}


def shapes_of(data: dict) -> dict[str, dict[str, tuple]]:
    return {m: {k: tuple(v.shape) for k, v in data[m].items() if torch.is_tensor(v)} for m in MODULES}


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_config(data: dict, path="the checkpoint") -> tuple[ModelConfig, list[str]]:
    """What the shapes of an authors'-layout checkpoint determine (K, widths, depths).

    Returns the configuration and the list of values that shapes cannot tell and
    were taken from the authors' defaults.
    """
    seg, rec = data["segmentation_module"], data["reconstruction_module"]
    try:
        k = seg["shift.weight"].shape[0]
        channels = seg["predictor.encoder.down_blocks.0.conv.weight"].shape[1]
        num_blocks = _count(seg, r"predictor\.encoder\.down_blocks\.(\d+)\.")
        seg_expansion = seg["shift.weight"].shape[1] - channels
        seg_max = max(seg[f"predictor.encoder.down_blocks.{i}.conv.weight"].shape[0] for i in range(num_blocks))
        scale = 1.0
        if "down.weight" in seg:
            size = seg["down.weight"].shape[-1]
            candidates = [1 / n for n in range(2, 33) if 2 * round((n - 1) / 2 * 4) + 1 == size]
            scale = candidates[0] if candidates else 0.25
        rec_expansion = rec["first.conv.weight"].shape[0]
        down = _count(rec, r"down_blocks\.(\d+)\.")
        rec_max = max([rec_expansion] + [rec[f"down_blocks.{i}.conv.weight"].shape[0] for i in range(down)])
        config = ModelConfig(
            num_segments=int(k),
            num_channels=int(channels),
            estimate_affine_part="affine.weight" in seg,
            segmentation=SegmentationParams(
                block_expansion=int(seg_expansion), max_features=int(seg_max), num_blocks=num_blocks, scale_factor=scale
            ),
            reconstruction=ReconstructionParams(
                block_expansion=int(rec_expansion),
                max_features=int(rec_max),
                num_down_blocks=down,
                num_bottleneck_blocks=_count(rec, r"bottleneck\.r(\d+)\."),
                segment_motion="fuse.weight" not in rec,
            ),
        )
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        raise CopartError(f"{path} does not have the tensors of a co-part segmentation model (missing {exc}).") from None
    assumed = ["temperature 0.1", "estimate_visibility True", "image size 256x256"]
    return config, assumed


def compare_shapes(expected: dict, actual: dict) -> list[str]:
    """Differences between two ``{module: {key: shape}}`` maps, as short phrases."""
    problems = []
    for module in MODULES:
        exp, act = expected.get(module, {}), actual.get(module, {})
        missing = sorted(set(exp) - set(act))
        extra = sorted(set(act) - set(exp))
        wrong = sorted(k for k in set(exp) & set(act) if tuple(exp[k]) != tuple(act[k]))
        if missing:
            problems.append(f"{module} lacks {len(missing)} key(s) such as {missing[0]}")
        if extra:
            problems.append(f"{module} has {len(extra)} unexpected key(s) such as {extra[0]}")
        if wrong:
            k = wrong[0]
            problems.append(f"{module}.{k} is {tuple(act[k])} where {tuple(exp[k])} is expected")
    return problems


def _model_from(config: ModelConfig, data: dict, path, label: str) -> CoPartModel:
    """Build ``config`` and load the two state dicts strictly, or say why not."""
    k_file = data["segmentation_module"].get("shift.weight")
    if k_file is not None and k_file.shape[0] != config.num_segments:
        raise CopartError(
            f"{path} has K={k_file.shape[0]} parts but {label} has K={config.num_segments}; "
            f"choose the preset with K={k_file.shape[0]}."
        )
    problems = compare_shapes(expected_shapes(config), shapes_of(data))
    if problems:
        raise CopartError(f"{path} does not match {label}: {'; '.join(problems[:3])}.")
    model = CoPartModel(config)
    for module in MODULES:
        getattr(model, module).load_state_dict(data[module], strict=True)
    return model.eval()


def load_model(
    path,
    config: Optional[dict] = None,
    config_label: str = "the configuration",
    part_names: Optional[dict] = None,
    data: Optional[dict] = None,
) -> LoadedModel:
    """A model ready for inference from a copart or authors'-layout checkpoint (``data``:
    the file's contents when the caller has read it already).

    ``config`` (a whole configuration in the authors' layout, e.g. from a preset)
    is required for nothing: a copart checkpoint carries its own, and an
    authors'-layout one without it is rebuilt from what its shapes determine.
    When both a copart checkpoint and ``config`` are given, their K must agree.
    """
    data = read_checkpoint(path) if data is None else data
    layout = detect_layout(data, path)
    notes: list[str] = []
    if layout == "fomm":
        raise CopartError(
            f"{path} is a First Order Motion Model checkpoint: it has no part segmentation to run, "
            f"only weights to start training from.",
            topic="fomm-checkpoint",
        )
    if layout == "copart":
        stored = data.get("config")
        model_config = ModelConfig.from_dict(stored, f"{path}'s stored configuration")
        if config is not None:
            wanted = ModelConfig.from_dict(config, config_label)
            if wanted.num_segments != model_config.num_segments:
                raise CopartError(
                    f"{path} has K={model_config.num_segments} parts but {config_label} has K={wanted.num_segments}."
                )
        whole = stored
        names = validate_part_names(data.get("part_names"), model_config.num_segments, str(path))
        model = _model_from(model_config, data, path, "its own stored configuration")
        step = data.get("step")
    else:
        if config is None:
            model_config, assumed = infer_config(data, path)
            notes.append(f"configuration inferred from tensor shapes; assumed {', '.join(assumed)}")
            whole = model_config.to_dict()
            label = "the configuration its shapes imply"
        else:
            model_config = ModelConfig.from_dict(config, config_label)
            whole = config
            label = config_label
        names = validate_part_names(
            part_names if part_names is not None else (config or {}).get("part_names"),
            model_config.num_segments,
            config_label,
        )
        model = _model_from(model_config, data, path, label)
        step = None
    epoch = data.get("epoch")
    return LoadedModel(
        model=model,
        layout=layout,
        config=whole,
        part_names=names,
        step=int(step) if isinstance(step, int) else None,
        epoch=int(epoch) if isinstance(epoch, int) else None,
        notes=notes,
        checkpoint=data,
    )


def model_from_config(config: dict, label: str = "the configuration") -> LoadedModel:
    """A model with fresh weights from a whole configuration (e.g. a preset)."""
    model_config = ModelConfig.from_dict(config, label)
    names = validate_part_names(config.get("part_names"), model_config.num_segments, label)
    return LoadedModel(model=CoPartModel(model_config), layout="preset", config=config, part_names=names)


# First Order Motion Model kp_detector head names -> copart segmentation module names.
FOMM_HEADS = {"kp.": "shift.", "jacobian.": "affine.", "semantic_seg.": "segmentation."}


def init_from_fomm(model: CoPartModel, data: dict) -> list[str]:
    """Copy every FOMM tensor whose name and shape fit into ``model``; returns notes
    that say what started fresh. ``dense_motion_network.*`` is ignored."""
    notes = []
    targets = {
        "segmentation_module": {_rename_fomm(k): v for k, v in data["kp_detector"].items()},
        "reconstruction_module": {
            k: v for k, v in data["generator"].items() if not k.startswith("dense_motion_network.")
        },
    }
    if not any(k.startswith("segmentation.") for k in targets["segmentation_module"]):
        notes.append("the checkpoint has no semantic_seg head: the segmentation head starts fresh")
    for module, source in targets.items():
        own = getattr(model, module).state_dict()
        loaded, skipped = 0, []
        with torch.no_grad():
            for key, value in own.items():
                if key in source and tuple(source[key].shape) == tuple(value.shape):
                    value.copy_(source[key])
                    loaded += 1
                elif not key.endswith("num_batches_tracked"):
                    skipped.append(key)
        if skipped:
            layers = list(dict.fromkeys(key.rsplit(".", 1)[0] for key in skipped))  # weight, bias, ... of a layer
            notes.append(
                f"{module}: {len(skipped)} tensor(s) in {len(layers)} layer(s) start fresh (no tensor of that "
                f"name and shape): {', '.join(layers)}"
            )
    return notes


def _rename_fomm(key: str) -> str:
    for old, new in FOMM_HEADS.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def load_init(path, model: CoPartModel) -> list[str]:
    """Initialise ``model`` for training from a FOMM, authors' or copart checkpoint."""
    data = read_checkpoint(path)
    layout = detect_layout(data, path)
    if layout == "fomm":
        return [f"initialised from the First Order Motion Model checkpoint {path}"] + init_from_fomm(model, data)
    _check_k(data, model.config.num_segments, path)
    problems = compare_shapes(expected_shapes(model.config), shapes_of(data))
    if problems:
        raise CopartError(f"{path} does not match the model being trained: {'; '.join(problems[:3])}.")
    for module in MODULES:
        getattr(model, module).load_state_dict(data[module], strict=True)
    return [f"initialised from the {layout}-layout checkpoint {path}"]


def _check_k(data: dict, k: int, path) -> None:
    shift = data["segmentation_module"].get("shift.weight")
    if shift is not None and shift.shape[0] != k:
        raise CopartError(f"{path} has K={shift.shape[0]} parts but the model has K={k}.")


def checkpoint_dict(
    model: CoPartModel,
    config: dict,
    part_names: Optional[dict] = None,
    step: int = 0,
    **extra,
) -> dict:
    """copart's own layout: weights, configuration, part names, step and any training state."""
    out = {
        "copart": FORMAT_VERSION,
        "config": _plain(config),
        "part_names": validate_part_names(part_names or {}, model.config.num_segments, "part_names"),
        "step": int(step),
        "segmentation_module": model.segmentation_module.state_dict(),
        "reconstruction_module": model.reconstruction_module.state_dict(),
    }
    out.update(extra)
    return out


def _plain(value):
    """Configuration as plain dicts, lists, numbers and strings (loads with weights_only)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"configuration value {value!r} is not plain data")


def save_atomic(data: dict, path) -> Path:
    """Write ``data`` with ``torch.save`` to a temporary file beside ``path``, then rename:
    a reader (or a killed writer) never sees a half-written file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
    return path

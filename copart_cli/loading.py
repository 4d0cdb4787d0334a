"""Choosing and loading a model for a command: --k, --preset, --checkpoint, part names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch

import presets
from models.checkpoint import (
    LoadedModel,
    compare_shapes,
    detect_layout,
    expected_shapes,
    infer_config,
    load_model,
    read_checkpoint,
    shapes_of,
)
from models.config import ModelConfig
from models.errors import CopartError

PUBLISHED_K = (5, 10, 15)
DEFAULT_K = 5


def model_home() -> Path:
    """Where published checkpoints are looked up: ``$COPART_HOME``, default ``~/.cache/copart``."""
    return Path(os.environ.get("COPART_HOME") or Path.home() / ".cache" / "copart").expanduser()


def _vox_preset(k: int) -> str:
    if k not in PUBLISHED_K:
        raise CopartError(f"--k {k} has no published model; choose 5, 10 or 15 (or give --preset or --checkpoint).")
    return f"vox-256-sem-{k}segments"


def published_path(preset: str) -> Path:
    """The published checkpoint of a preset in the model folder, or one clear error."""
    home = model_home()
    names = [presets.PUBLISHED[preset]] if preset in presets.PUBLISHED else []
    names.append(f"{Path(preset).stem}.pth.tar")
    for name in names:
        if (home / name).is_file():
            return home / name
    wanted = names[0]
    authors = preset in presets.PUBLISHED or preset in presets.PUBLISHED_UNNAMED
    where = f"from the authors ({presets.AUTHORS_DOWNLOAD})" if authors else "for this preset"
    raise CopartError(
        f"The checkpoint {wanted} is not in {home}: download it {where} and put it there "
        f"(or set COPART_HOME), or pass --checkpoint FILE."
    )


def resolve_model(
    k: Optional[int] = None,
    preset: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    device: str = "cpu",
) -> LoadedModel:
    """The model a command runs, from the options a user gave.

    A copart checkpoint carries its own configuration; an authors'-layout one takes
    it from ``preset``, else from ``--k``'s published preset, else from the published
    preset its shapes match (without that preset's part names: only a preset the user
    names attaches them). Without a checkpoint, the preset's published file is
    looked up in :func:`model_home`. An explicit ``k`` must agree with the file.
    """
    if checkpoint is None:
        name = preset or _vox_preset(k or DEFAULT_K)
        checkpoint = published_path(presets.label(name) if preset else name)
    else:
        checkpoint = Path(checkpoint).expanduser()
    config, label, data, names = None, "the configuration", None, None
    if preset is not None:
        config, label = presets.load(preset), presets.label(preset)
    elif k is not None:
        name = _vox_preset(k)
        config, label = presets.load(name), f"--k {k} ({name})"
    else:
        data = read_checkpoint(checkpoint)
        if detect_layout(data, checkpoint) == "authors":
            inferred, _ = infer_config(data, checkpoint)
            name = f"vox-256-sem-{inferred.num_segments}segments"
            if name in presets.names() and preset_matches(name, shapes_of(data)):
                # Its shapes fit (vox-10's also fit taichi's): the computation, not the names.
                config, label, names = presets.load(name), name, {}
    loaded = load_model(checkpoint, config=config, config_label=label, part_names=names, data=data)
    if k is not None and loaded.model.num_segments != k:
        raise CopartError(f"{checkpoint} has K={loaded.model.num_segments} parts but --k {k} was given.")
    loaded.model.to(device)
    return loaded


def preset_matches(name: str, shapes: dict) -> bool:
    """A shipped preset's model has exactly these keys and shapes."""
    return not compare_shapes(expected_shapes(ModelConfig.from_dict(presets.load(name), name)), shapes)


def matching_presets(shapes: dict) -> list[str]:
    """Every shipped preset whose model has exactly these keys and shapes."""
    return [name for name in presets.names() if preset_matches(name, shapes)]


def parse_parts(specs: Sequence[str], part_names: dict, num_segments: int) -> list[int]:
    """Channel numbers from ``--parts`` values: names, numbers (0 = background, 1..K), or a
    mix, comma-separated or repeated. Unknown names list the valid ones."""
    channels: list[int] = []
    lowered = {name.lower(): c for name, c in part_names.items()}
    for spec in specs:
        for token in str(spec).split(","):
            token = token.strip()
            if not token:
                continue
            if token.lstrip("-").isdigit():
                value = int(token)
                if not 0 <= value <= num_segments:
                    raise CopartError(
                        f"Part number {value} is out of range: this model has channels 0 (background) to {num_segments}."
                    )
                found = [value]
            elif token.lower() in lowered:
                found = lowered[token.lower()]
            else:
                known = ", ".join(f"{n} ({','.join(map(str, c))})" for n, c in part_names.items())
                raise CopartError(
                    f"Unknown part '{token}': this model knows "
                    + (f"{known}, or" if known else "no part names (--k or --preset attaches a published model's); use")
                    + f" channel numbers 0 (background) to {num_segments}."
                )
            channels += [c for c in found if c not in channels]
    if not channels:
        raise CopartError("--parts names no part; give names or channel numbers, e.g. --parts hair or --parts 3,4.")
    return channels


def pick_device(device: str) -> str:
    """``auto``: CUDA when present, else the CPU; an unavailable device is one sentence."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CopartError(f"--device {device} was asked for but PyTorch sees no CUDA GPU here.")
    try:
        torch.device(device)
    except RuntimeError:
        raise CopartError(f"Unknown --device '{device}'; use auto, cpu or cuda[:N].") from None
    return device

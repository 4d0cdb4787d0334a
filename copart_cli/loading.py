"""Choosing, loading and describing a model: by published K, preset or checkpoint file;
part names; the device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from copart import hub, presets
from copart.models.checkpoint import (
    MODULES,
    LoadedModel,
    checkpoint_dict,
    compare_shapes,
    detect_layout,
    expected_shapes,
    infer_config,
    load_model,
    read_checkpoint,
    shapes_of,
    validate_part_names,
)
from copart.models.config import ModelConfig
from copart.models.errors import CopartError

DEFAULT_K = presets.DEFAULT_K


def model_home() -> Path:
    """Where published checkpoints are looked up: ``$COPART_HOME``, default ``~/.cache/copart``."""
    return hub.home()


def _preset_of_k(k: int) -> str:
    """The preset of the published model ``--k k`` names (the registry's; one sentence if none)."""
    return presets.for_k(k).preset


def published_path(preset: str, downloads=None) -> Path:
    """The published checkpoint of a preset in the model cache, fetched (and verified) on first
    use when copart knows where it is published; else one clear error."""
    known = hub.for_preset(preset)
    if known is not None:
        return hub.pull(known, downloads)
    path = model_home() / f"{Path(preset).stem}.pth.tar"
    if path.is_file():
        return path
    raise CopartError(
        f"The checkpoint {path.name} is not in {model_home()}: train one for this preset and put it there "
        f"(or set COPART_HOME), or pass --checkpoint FILE."
    )


@dataclass(frozen=True)
class ModelChoice:
    """Which model to run, as a user names it: a published K, a preset (name or YAML), a
    checkpoint file, or a combination (see :func:`resolve_model`)."""

    k: Optional[int] = None
    preset: Optional[str] = None
    checkpoint: Optional[Path] = None

    def load(self, device: str = "cpu", downloads=None) -> LoadedModel:
        """The model, its published file fetched on first use (``downloads`` reports that)."""
        return resolve_model(self.k, self.preset, self.checkpoint, device, downloads)

    def check_files(self) -> None:
        """The files named exist (a checkpoint, a preset's YAML): one sentence if not, said
        before anything about the outputs. Reads nothing; :meth:`load` does."""
        if self.preset is not None:
            presets.path_of(self.preset)
        if self.checkpoint is not None:
            path = Path(self.checkpoint).expanduser()
            if not path.exists():
                raise CopartError(f"Checkpoint {path} does not exist.")
            if path.is_dir():
                raise CopartError(f"Checkpoint {path} is a folder, not a file.")


def resolve_model(
    k: Optional[int] = None,
    preset: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    device: str = "cpu",
    downloads=None,
) -> LoadedModel:
    """The model a command runs, from the options a user gave.

    A copart checkpoint carries its own configuration; an authors'-layout one takes
    it from ``preset``, else from ``--k``'s published preset, else from the published
    preset its shapes match (without that preset's part names: only a preset the user
    names attaches them). Without a checkpoint, the preset's published file is
    looked up in :func:`model_home`. An explicit ``k`` must agree with the file.
    """
    if checkpoint is None:
        name = preset or _preset_of_k(k or DEFAULT_K)
        checkpoint = published_path(presets.label(name) if preset else name, downloads)
    else:
        checkpoint = Path(checkpoint).expanduser()
    config, label, data, names = None, "the configuration", None, None
    if preset is not None:
        config, label = presets.load(preset), presets.label(preset)
    elif k is not None:
        name = _preset_of_k(k)
        config, label = presets.load(name), f"--k {k} ({name})"
    else:
        data = read_checkpoint(checkpoint)
        if detect_layout(data, checkpoint) == "authors":
            inferred, _ = infer_config(data, checkpoint)
            named = presets.for_k(inferred.num_segments, strict=False)
            if named is not None and preset_matches(named.preset, shapes_of(data)):
                # Its shapes fit (vox-10's also fit taichi's): the computation, not the names.
                config, label, names = presets.load(named.preset), named.preset, {}
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


CHECKPOINT_SUFFIXES = (".pth", ".tar", ".pt", ".ckpt", ".bin")


def _is_checkpoint(target: str) -> bool:
    path = Path(target).expanduser()
    if path.suffix in (".yaml", ".yml"):
        return False
    if path.exists():
        return True
    if any(target.endswith(s) for s in CHECKPOINT_SUFFIXES) or "/" in target or "\\" in target:
        raise CopartError(f"{target} does not exist.")
    return False


def _parameters(config: ModelConfig) -> dict[str, int]:
    from copart.models.model import CoPartModel

    with torch.device("meta"):
        model = CoPartModel(config)
    counts = {m: sum(p.numel() for p in getattr(model, m).parameters()) for m in MODULES}
    counts["total"] = sum(counts.values())
    return counts


def describe(target: str, preset: Optional[str] = None) -> dict:
    """Everything ``copart info`` reports, as plain data."""
    if not _is_checkpoint(target):
        config = presets.load(target)
        label = presets.label(target)
        model_config = ModelConfig.from_dict(config, label)  # no weights needed to describe it
        names = validate_part_names(config.get("part_names"), model_config.num_segments, label)
        report = _base(label, "preset", model_config, config, names)
        published = presets.published(label)
        if published is not None:
            report["published_checkpoint"] = published.file
            report["published_model"] = published.model
        return report

    path = Path(target).expanduser()
    data = read_checkpoint(path)
    layout = detect_layout(data, path)
    preset_config = presets.load(preset) if preset else None
    preset_label = presets.label(preset) if preset else "the configuration"
    if layout == "fomm":
        return _describe_fomm(path, data)
    if layout == "authors" and preset_config is None:
        config, assumed = infer_config(data, path)
        report = _base(str(path), layout, config, config.to_dict(), {})
        report["matching_presets"] = matching_presets(shapes_of(data))
        report["notes"] = [
            "an authors'-layout file holds no configuration: K, widths and depths come from its tensor shapes",
            f"not stored, taken as the authors' defaults: {', '.join(assumed)}",
            "part names are attached when you name the preset with --preset",
        ]
        report["epoch"] = data.get("epoch")
        return report
    loaded = load_model(path, config=preset_config, config_label=preset_label, data=data)
    report = _base(str(path), layout, loaded.model.config, loaded.config, loaded.part_names)
    report["matching_presets"] = matching_presets(shapes_of(data))
    report["step"] = loaded.step
    report["epoch"] = loaded.epoch
    if preset:
        report["preset"] = preset_label
    return report


def _base(source: str, layout: str, config: ModelConfig, whole: dict, part_names: dict) -> dict:
    return {
        "source": source,
        "layout": layout,
        "num_segments": config.num_segments,
        "image_size": list(config.image_size),
        "segmentation_size": list(config.segmentation_size),
        "model_params": config.model_params(),
        "parameters": _parameters(config),
        "part_names": part_names,
        "notes": [],
    }


def _describe_fomm(path: Path, data: dict) -> dict:
    kp = data["kp_detector"]
    num_kp = kp["kp.weight"].shape[0] if "kp.weight" in kp else None

    def count(sd: dict) -> int:
        return sum(
            v.numel()
            for k, v in sd.items()
            if hasattr(v, "numel") and not k.endswith(("running_mean", "running_var", "num_batches_tracked", "down.weight"))
        )

    params = {"kp_detector": count(kp), "generator": count(data["generator"])}
    params["total"] = sum(params.values())
    notes = ["loads with 'copart train --init' as the initialisation of a model (kp -> shift, jacobian -> affine)"]
    notes.append(
        "has a semantic_seg head: the segmentation starts from it"
        if "semantic_seg.weight" in kp
        else "has no semantic_seg head: the segmentation head starts fresh"
    )
    if any(k.startswith("dense_motion_network.") for k in data["generator"]):
        notes.append("its dense_motion_network is not used")
    return {
        "source": str(path),
        "layout": "fomm",
        "num_segments": num_kp,
        "parameters": params,
        "epoch": data.get("epoch"),
        "part_names": {},
        "notes": notes,
    }


def with_part_names(loaded: LoadedModel, names: dict[str, list[int]], source: str = "the new part names") -> dict:
    """The checkpoint to save for ``loaded`` with ``names`` added to its part names. A copart
    checkpoint keeps everything else, training state included (and the names in its stored
    configuration, so that a resumed run keeps them); any other becomes a copart checkpoint."""
    merged = dict(loaded.part_names)
    merged.update(validate_part_names(names, loaded.model.num_segments, source))
    config = {**loaded.config, "part_names": merged}
    if loaded.layout == "copart":
        return {**loaded.checkpoint, "config": config, "part_names": merged}
    return checkpoint_dict(loaded.model, config, merged, step=loaded.step or 0)

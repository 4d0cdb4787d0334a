"""``copart info``: what a checkpoint or preset holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import presets
from models.checkpoint import (
    MODULES,
    detect_layout,
    infer_config,
    load_model,
    read_checkpoint,
    shapes_of,
    validate_part_names,
)
from models.config import ModelConfig
from models.errors import CopartError

from .loading import matching_presets

HELP = "Describe a checkpoint or a preset: layout, K, configuration, parameters, part names, training step."
EPILOG = (
    "Examples:\n\n"
    "  copart info vox-256-sem-5segments\n\n"
    "  copart info vox-10segments.pth.tar --preset vox-256-sem-10segments\n\n"
    "  copart info run/checkpoint.pth --json"
)
CHECKPOINT_SUFFIXES = (".pth", ".tar", ".pt", ".ckpt", ".bin")
LAYOUT_NAMES = {
    "preset": "preset (configuration only, no weights)",
    "authors": "authors' published layout (segmentation_module, reconstruction_module)",
    "fomm": "First Order Motion Model (kp_detector, generator): an initialisation for training",
    "copart": "copart checkpoint (weights, configuration, part names)",
}


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
    import torch

    from models.model import CoPartModel

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
        if label in presets.PUBLISHED:
            report["published_checkpoint"] = presets.PUBLISHED[label]
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


def _print(report: dict) -> None:
    console = Console(highlight=False)
    table = Table(title=f"copart info: {report['source']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("layout", LAYOUT_NAMES[report["layout"]])
    table.add_row("parts (K)", f"{report['num_segments']} (+ background)")
    if "image_size" in report:
        h, w = report["image_size"]
        sh, sw = report["segmentation_size"]
        table.add_row("resolution", f"{h}x{w} frames, part maps {sh}x{sw}")
    if "model_params" in report:
        seg = report["model_params"]["segmentation_module_params"]
        rec = report["model_params"]["reconstruction_module_params"]
        common = report["model_params"]["common_params"]
        table.add_row(
            "segmentation",
            f"U-Net {seg['num_blocks']} blocks, width {seg['block_expansion']}..{seg['max_features']}, "
            f"scale {seg['scale_factor']}, temperature {seg['temperature']}, "
            f"affine {'yes' if common['estimate_affine_part'] else 'no'}",
        )
        table.add_row(
            "reconstruction",
            f"{rec['num_down_blocks']} down/up blocks, {rec['num_bottleneck_blocks']} residual blocks, "
            f"width {rec['block_expansion']}..{rec['max_features']}, "
            f"visibility {'yes' if rec['estimate_visibility'] else 'no'}"
            + ("" if rec.get("segment_motion", True) else ", Naive (no motion)")
            + (", V-back-prop" if rec.get("visibility_backprop") else ""),
        )
    table.add_row("parameters", ", ".join(f"{k} {v:,}" for k, v in report["parameters"].items()))
    names = report.get("part_names") or {}
    table.add_row("part names", ", ".join(f"{n} = {','.join(map(str, c))}" for n, c in names.items()) or "none")
    for key, title in (("matching_presets", "matching presets"), ("preset", "preset")):
        if key in report:
            value = report[key]
            table.add_row(title, (", ".join(value) if isinstance(value, list) else str(value)) or "none")
    if report.get("step") is not None:
        table.add_row("training step", str(report["step"]))
    if report.get("epoch") is not None:
        table.add_row("epoch", str(report["epoch"]))
    if report.get("published_checkpoint"):
        table.add_row("published file", report["published_checkpoint"])
    for note in report.get("notes", []):
        table.add_row("note", note)
    console.print(table)


def info(
    checkpoint_or_preset: str = typer.Argument(
        ..., metavar="CHECKPOINT_OR_PRESET", help="A checkpoint file, a preset name, or a YAML in the authors' layout."
    ),
    preset: Optional[str] = typer.Option(
        None, "--preset", "-p", metavar="NAME|YAML", help="The configuration of an authors'-layout checkpoint."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    report = describe(checkpoint_or_preset, preset)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print(report)

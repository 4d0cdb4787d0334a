"""``copart info``: what a checkpoint or preset holds."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

HELP = "Describe a checkpoint or a preset: layout, K, configuration, parameters, part names, training step."
EPILOG = (
    "Examples:\n\n"
    "  copart info vox-256-sem-5segments\n\n"
    "  copart info vox-10segments.pth.tar --preset vox-256-sem-10segments\n\n"
    "  copart info demo/model.pth --json"
    "\n\nMore: docs/checkpoints.md in copart's source."
)
LAYOUT_NAMES = {
    "preset": "preset (configuration only, no weights)",
    "authors": "authors' published layout (segmentation_module, reconstruction_module)",
    "fomm": "First Order Motion Model (kp_detector, generator): an initialisation for training",
    "copart": "copart checkpoint (weights, configuration, part names)",
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
    if report.get("published_model"):
        table.add_row("published model", report["published_model"])
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
    from copart.loading import describe

    report = describe(checkpoint_or_preset, preset)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print(report)

"""``copart eval``: the paper's metrics (landmark-regression MAE, foreground IoU)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from copart import ui

from . import options

HELP = "Score a model with the paper's metrics: landmark-regression MAE and foreground IoU."
EPILOG = (
    "Examples:\n\n"
    "  copart eval data/vox-eval --k 10 --metric mae --trust-pickle\n\n"
    "  copart eval demo/data/eval --checkpoint demo/model.pth --metric all --plot eval.png --json\n\n"
    "ROOT holds train/ (fit set) and test/ (held-out) images, landmarks (the authors' *_gt.pkl, or\n"
    "<split>_landmarks.npz/.csv) and, for IoU, masks/test/ PNGs."
    "\n\nMore: docs/eval.md in copart's source."
)


class Metric(str, Enum):
    mae = "mae"
    iou = "iou"
    all = "all"


def eval_command(
    root: Path = typer.Argument(..., help="Folder with train/ and test/ images, landmarks and masks."),
    metric: Metric = typer.Option(Metric.all, "--metric", "-m", help="mae, iou or all."),
    k: options.K = None,
    preset: options.Preset = None,
    checkpoint: options.Checkpoint = None,
    fit_landmarks: Optional[Path] = typer.Option(None, "--fit-landmarks", help="Landmarks of train/ (default: found in ROOT)."),
    test_landmarks: Optional[Path] = typer.Option(None, "--test-landmarks", help="Landmarks of test/."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Foreground masks of test/ (default ROOT/masks/test)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Read the authors' pickled landmark tables."),
    crop: bool = typer.Option(False, "--crop", help="Detect and crop faces first (evaluation images are crops already)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Write predicted vs true landmarks on test images."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
    device: options.Device = "auto",
    # fp32 by default, not auto: eval reproduces the paper's figures, where the arithmetic matters.
    precision: options.PrecisionOption = options.Precision.fp32,
) -> None:
    from copart.evaluation.evaluate import evaluate
    from copart.loading import ModelChoice

    console = ui.console()
    with ui.CountProgress(console, "eval", "images") as progress:
        results = evaluate(root, ModelChoice(k, preset, checkpoint), metric=metric.value,
                           fit_landmarks=fit_landmarks, test_landmarks=test_landmarks, masks=masks,
                           trust_pickle=trust_pickle, crop=crop, plot_path=plot_path, batch_size=batch_size,
                           device=device, precision=precision.value, progress=progress,
                           notice=ui.notice(console), downloads=ui.downloads(console))
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    table = Table(title=f"copart eval: {results['root']} (K = {results['num_segments']})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "mae" in results:
        table.add_row("landmark MAE, sum over coordinates (paper's Table 1)", f"{results['mae']['sum']:.2f}")
        table.add_row("landmark MAE, mean per coordinate (pixels)", f"{results['mae']['mean']:.3f}")
    if "iou" in results:
        table.add_row("foreground IoU (mean over images)", f"{results['iou']['iou_mean']:.4f}")
    table.add_row("images (fit / held-out)", f"{results['fit_images']} / {results['test_images']}")
    Console(highlight=False).print(table)
    if "plot" in results:
        typer.echo(f"Plot -> {results['plot']}")

"""``copart demo``: the whole pipeline on synthetic data, on a CPU, in one folder."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from copart import ui
from copart.models.errors import Interrupted

HELP = ("Run the whole pipeline on synthetic data (6 to 12 minutes on a 2-core CPU, mostly training): synthetic, "
        "train, segment, swap, eval.")
EPILOG = ("Example:\n\n  copart demo demo/\n\nCOPART_DEMO_QUICK=1 (or --quick) shrinks every step for a smoke test."
    "\n\nMore: docs/demo.md in copart's source.")


def demo(
    folder: Path = typer.Argument(Path("demo"), help="Where everything goes (reused when run again)."),
    steps: int = typer.Option(800, "--steps", min=1, help="Training steps (800: 6 to 12 minutes on 2 cores, by the CPU and its load)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes for a smoke test (also COPART_DEMO_QUICK=1)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the training run (which parts it learns varies with it)."),
) -> None:
    from copart.demo import Reporter, run

    console = ui.console()
    quick = quick or os.environ.get("COPART_DEMO_QUICK", "") not in ("", "0")
    report = Reporter(say=typer.echo, notice=ui.notice(console), warn=ui.warning(console),
                      progress=lambda name, unit: ui.CountProgress(console, name, unit),
                      training=lambda: ui.TrainingProgress(console))
    try:
        summary = run(folder, steps, quick, report, seed=seed)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; run copart demo {folder} again to continue from what was finished") from None
    names = summary["part_names"]
    metrics = summary["metrics"]
    typer.echo(
        f"Done in {sum(summary['seconds'].values()):.0f} s: parts "
        f"{', '.join(f'{n}={c}' for n, c in names.items()) or 'unnamed'}; "
        f"IoU {metrics['iou']:.3f}, landmark MAE {metrics['mae_mean']:.2f} px per coordinate; "
        f"videos {Path(summary['segmentation']).name}, {Path(summary['swap']).name}; "
        f"summary {Path(summary['folder']) / 'summary.json'}"
    )

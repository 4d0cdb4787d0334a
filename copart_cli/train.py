"""``copart train``: self-supervised training from a folder of videos; ``copart synthetic``."""

from __future__ import annotations

import copy
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import presets
from models.config import VARIANTS, apply_variant
from models.errors import CopartError

from . import options
from .loading import pick_device

HELP = "Train the part segmentation and reconstruction from unlabelled videos (self-supervised)."
EPILOG = (
    "Examples:\n\n"
    "  copart train --preset vox-256-sem-10segments --data data/vox --out runs/vox10\n\n"
    "  copart train --preset cpu-64-sem-5segments --data demo/videos --out runs/demo --steps 300\n\n"
    "  copart train --resume runs/vox10\n\n"
    "  torchrun --nproc_per_node 4 -m copart_cli train --preset taichi-256-sem --data data/taichi --out runs/t"
)
SYNTHETIC_HELP = "Write synthetic articulated-motion videos with ground-truth parts, landmarks and foreground."

Variant = Enum("Variant", {name.replace("-", "_"): name for name in VARIANTS}, type=str)


class Loss(str, Enum):
    perceptual = "perceptual"
    pixel = "pixel"


def train(
    preset: Optional[str] = typer.Option(None, "--preset", metavar="NAME|YAML", help="Configuration (required unless --resume)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder of videos, frame folders or PNG strips."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder for checkpoints, log and pictures."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder where it stopped."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing --out folder."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's epochs)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override train_params.num_epochs."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Override train_params.num_repeats."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Pairs per step, over all processes."),
    loss: Optional[Loss] = typer.Option(None, "--loss", help="Reconstruction loss: perceptual (VGG-19) or pixel."),
    variant: Optional[Variant] = typer.Option(None, "--variant", help="Ablation of Table 1(b) (default: full)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from a First Order Motion Model or copart checkpoint."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order, augmentation and weights."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader worker processes (default 2)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1,
                                                   help="Checkpoint every N steps (default 500)."),
    vis_every: Optional[int] = typer.Option(None, "--vis-every", min=0,
                                            help="Training picture every N steps (0: never) (default 500)."),
    device: options.Device = "auto",
    precision: options.PrecisionOption = options.Precision.fp32,
) -> None:
    from .training import TrainSettings, prepare_run_folder
    from .training import train as run_training

    console = Console(stderr=True, highlight=False)
    device = pick_device(device)
    overrides = None
    if resume is not None:
        if init is not None:
            raise CopartError("--resume continues a run; --init starts a new one: give one of them.")
        fixed = {"--preset": preset, "--data": data, "--epochs": epochs, "--repeats": repeats,
                 "--batch-size": batch_size, "--loss": loss, "--variant": variant}
        given = [name for name, value in fixed.items() if value is not None]
        if given:
            raise CopartError(f"--resume continues a run as it was configured; {', '.join(given)} cannot change it "
                              f"(--steps, --workers, --checkpoint-every and --vis-every can).")
        # Only what the user gave changes the run (None: keep the stored value).
        overrides = {"steps": steps, "workers": workers, "checkpoint_every": checkpoint_every, "vis_every": vis_every}
        out = resume
        prepare_run_folder(out, True, False, _rank())
        config, label, settings = {}, str(resume), None
    else:
        if preset is None or data is None or out is None:
            raise CopartError("copart train needs --preset, --data and --out (or --resume RUN).")
        if not Path(data).is_dir():
            raise CopartError(f"Data folder {data} does not exist." if not Path(data).exists()
                              else f"Data folder {data} is not a folder.")
        config, label = copy.deepcopy(presets.load(preset)), presets.label(preset)
        if variant is not None:
            config = apply_variant(config, variant.value)
        train_params = config.setdefault("train_params", {})
        if epochs is not None:
            train_params["num_epochs"] = epochs
        if repeats is not None:
            train_params["num_repeats"] = repeats
        if loss is not None:
            train_params["loss"] = loss.value
        prepare_run_folder(out, False, force, _rank())
        given = {"workers": workers, "checkpoint_every": checkpoint_every, "vis_every": vis_every}
        settings = TrainSettings(  # options not given keep TrainSettings' defaults
            data=str(Path(data).resolve()), steps=steps,
            batch_size=batch_size or int(train_params.get("batch_size", 16)), seed=seed,
            precision=precision.value, loss=loss.value if loss else None,
            **{name: value for name, value in given.items() if value is not None},
        )
    progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
                        TextColumn("{task.fields[losses]}"), TextColumn("{task.fields[rate]} pairs/s"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                        disable=_rank() != 0)
    task = None

    def on_step(step, total, losses, rate):
        nonlocal task
        if task is None:
            task = progress.add_task("train", total=total, completed=step - 1, losses="", rate="-")
        short = {"equivariance_shift": "shift", "equivariance_affine": "affine", "total": "total"}
        shown = " ".join(f"{short.get(k, 'rec')} {v:.3f}" for k, v in losses.items())
        progress.update(task, completed=step, losses=shown, rate=f"{rate:.1f}")

    with progress:
        report = run_training(config, out, settings or TrainSettings(data="", steps=0, batch_size=1), None if resume
                              else init, resume is not None, device, label, on_step,
                              lambda m: console.print(f"[yellow]Warning:[/] {m}."), overrides)
    for note in report.notes:
        console.print(f"Note: {note}.")
    if _rank() == 0:
        typer.echo(f"Trained to step {report.step} ({report.pairs_per_second:.1f} pairs/s) -> {Path(out) / 'checkpoint.pth'}")


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def synthetic(
    out: Path = typer.Argument(..., help="Folder to write train/, test/ and groundtruth/ into."),
    videos: int = typer.Option(12, "--videos", min=2, help="Number of clips (the last --test are held out)."),
    test: int = typer.Option(3, "--test", min=1, help="Clips in test/."),
    frames: int = typer.Option(48, "--frames", min=2, help="Frames per clip."),
    size: int = typer.Option(64, "--size", min=16, help="Frame side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the figures and motions."),
) -> None:
    from .synthetic import generate

    if test >= videos:
        raise CopartError(f"--test ({test}) must be smaller than --videos ({videos}).")
    result = generate(out, videos, frames, size, test, seed)
    typer.echo(f"{result['videos']} synthetic clips ({result['written']} new) in {out}")

"""``copart train``: self-supervised training from a folder of videos."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from copart import ui
from copart.models.config import VARIANTS
from copart.models.errors import CopartError, Interrupted

from . import options

HELP = "Train the part segmentation and reconstruction from unlabelled videos (self-supervised)."
EPILOG = (
    "Examples:\n\n"
    "  copart train --preset vox-256-sem-10segments --data data/vox --out runs/vox10\n\n"
    "  copart train --preset cpu-64-sem-5segments --data demo/data --out runs/figures --steps 20\n\n"
    "  copart train --resume runs/figures --steps 40\n\n"
    "  copart train --preset cpu-64-sem-10segments --data demo/data --out runs/k10 --minutes 20\n\n"
    "  torchrun --nproc_per_node 4 -m copart train --preset taichi-256-sem --data data/taichi --out runs/t"
    "\n\nMore: docs/train.md in copart's source."
)

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
    minutes: Optional[float] = typer.Option(None, "--minutes", min=0.01,
                                            help="Train for this many minutes (training time, after start-up, "
                                                 "over every start of the run: a resumed run finishes what is left), "
                                                 "then save as a finished run; with --steps, whichever comes first; "
                                                 "with --resume, this many more minutes."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override train_params.num_epochs."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Override train_params.num_repeats."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Pairs per step, over all processes."),
    loss: Optional[Loss] = typer.Option(None, "--loss", help="Reconstruction loss: perceptual (VGG-19) or pixel."),
    variant: Optional[Variant] = typer.Option(None, "--variant", help="Ablation of Table 1(b) (default: full)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from a First Order Motion Model or copart "
                                                              "checkpoint (a file, or vox-cpk: fetched)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order, augmentation and weights."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader worker processes (default 2)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1,
                                                   help="A numbered snapshot checkpoint-STEP.pth every N steps and "
                                                        "at the end (default 500)."),
    keep: Optional[int] = typer.Option(None, "--keep", min=1,
                                       help="Keep only the newest N numbered snapshots this run wrote, deleting "
                                            "older ones (default: keep all)."),
    checkpoint_minutes: Optional[float] = typer.Option(None, "--checkpoint-minutes", min=0,
                                                       help="Also save checkpoint.pth when this many minutes have "
                                                            "passed since the last checkpoint, replacing the last "
                                                            "one (default 5; 0: by steps only)."),
    vis_every: Optional[int] = typer.Option(None, "--vis-every", min=0,
                                            help="Training picture every N steps (0: never) (default 500)."),
    device: options.Device = "auto",
    precision: options.TrainPrecisionOption = options.TrainPrecision.fp32,
) -> None:
    from copart.loading import pick_device
    from copart.training.loop import TrainingInterrupted, TrainSettings, new_run_config
    from copart.training.loop import train as run_training

    console = ui.console()
    rank = int(os.environ.get("RANK", "0"))
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
                              f"(--steps, --minutes, --workers, --checkpoint-every, --keep, --checkpoint-minutes and "
                              f"--vis-every can).")
        # Only what the user gave changes the run (None: keep the stored value). Without --steps and
        # --minutes the run ends as it was started to (its steps, or the rest of its time budget).
        overrides = {"steps": steps, "minutes": minutes, "workers": workers, "checkpoint_every": checkpoint_every,
                     "keep": keep, "checkpoint_minutes": checkpoint_minutes, "vis_every": vis_every}
        out = resume
        config, label, settings = {}, str(resume), None
    else:
        if preset is None or data is None or out is None:
            raise CopartError("copart train needs --preset, --data and --out (or --resume RUN).")
        if init is not None and not Path(init).expanduser().exists() and not any(c in str(init) for c in "/."):
            init = _fetch_init(str(init), console, device)  # a model by name, e.g. vox-cpk
        config, label = new_run_config(preset, data, variant.value if variant else None, epochs, repeats,
                                       loss.value if loss else None)
        given = {"workers": workers, "checkpoint_every": checkpoint_every, "keep": keep,
                 "checkpoint_minutes": checkpoint_minutes, "vis_every": vis_every}
        settings = TrainSettings(  # options not given keep TrainSettings' defaults
            data=str(Path(data).resolve()), steps=steps,
            batch_size=batch_size or int(config["train_params"].get("batch_size", 16)), seed=seed,
            precision=precision.value, loss=loss.value if loss else None, minutes=minutes,
            **{name: value for name, value in given.items() if value is not None},
        )
    try:
        with ui.TrainingProgress(console, disable=rank != 0) as progress:
            report = run_training(config, out, settings or TrainSettings(data="", steps=0, batch_size=1),
                                  None if resume else init, resume is not None, device, label, progress,
                                  ui.warning(console), overrides, force)
    except TrainingInterrupted as stopped:
        raise Interrupted(f"{stopped}; continue with copart train --resume {stopped.out}") from None
    if rank == 0:  # once, not once per process
        for note in report.notes:
            console.print(f"Note: {note}.")
        typer.echo(f"Trained to step {report.step} ({report.pairs_per_second:.1f} pairs/s) -> {Path(out) / 'checkpoint.pth'}")


def _fetch_init(name: str, console, device: str) -> Path:
    """The file of a model named for --init, fetched once: under torchrun the first process of each
    machine downloads it while the others wait; if it fails, every process stops with its sentence."""
    from copart import hub
    from copart.training.loop import first_of_each_machine

    entry = hub.entry(name)
    first_of_each_machine(lambda: hub.pull(entry, ui.downloads(console)), device)
    return entry.path

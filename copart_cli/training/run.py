"""Starting or resuming a run: its settings, its configuration and its folder.

A new run checks its data folder and its run folder (new, empty, or ``--force``) before it makes
anything; a resumed one reads the latest checkpoint of its folder and goes on with the settings
stored there, changed only in how the run ends and how often it saves.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from copart import presets
from copart.models.checkpoint import read_checkpoint
from copart.models.config import apply_variant
from copart.models.errors import CopartError
from copart.models.files import check_creatable

from .checkpoints import SNAPSHOTS, latest_checkpoint


@dataclass
class TrainSettings:
    """What a run needs to be repeated exactly; stored in every checkpoint."""

    data: str
    steps: Optional[int]  # None with ``minutes``: bounded by time alone
    batch_size: int
    seed: int = 0
    workers: int = 2
    checkpoint_every: int = 500
    checkpoint_minutes: float = 5.0  # also a checkpoint when this long has passed since the last one
    vis_every: int = 500
    precision: str = "fp32"
    loss: Optional[str] = None
    minutes: Optional[float] = None  # stop after this much training time, as a finished run (all starts together)
    spent_seconds: float = 0.0  # training time spent so far, over every start of the run
    keep: Optional[int] = None  # numbered snapshots kept (the newest the run wrote); None: all


UNBOUNDED = 10**9  # the step limit of a run bounded by --minutes alone (never stored)


def resumed_settings(stored: dict, overrides: Optional[dict] = None) -> TrainSettings:
    """The settings of a resumed run: the stored ones, with ``overrides`` (None: keep the stored
    value). Given neither ``steps`` nor ``minutes``, the run finishes what it was started with: its
    step count, or what is left of its time budget (the minutes already spent count). Given
    either or both, they say how the resumed run ends instead: ``steps`` the step to reach,
    ``minutes`` this many more minutes of training; both: whichever comes first."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in fields(TrainSettings)}
    values = {k: v for k, v in stored.items() if k in known}
    if values.get("steps") is not None and int(values["steps"]) >= UNBOUNDED:  # saved before budgets were kept
        values["steps"] = None
    settings = TrainSettings(**{**values, **{k: v for k, v in overrides.items() if k not in ("steps", "minutes")}})
    if "steps" in overrides or "minutes" in overrides:
        settings.steps = overrides.get("steps")
        settings.minutes = settings.spent_seconds / 60 + overrides["minutes"] if "minutes" in overrides else None
    return settings


def new_run_config(preset: str, data, variant: Optional[str] = None, epochs: Optional[int] = None,
                   repeats: Optional[int] = None, loss: Optional[str] = None) -> tuple[dict, str]:
    """The configuration of a new run (a copy of the preset with these overrides) and its label;
    the data folder is checked first."""
    data = Path(data)
    if not data.is_dir():
        raise CopartError(f"Data folder {data} does not exist." if not data.exists()
                          else f"Data folder {data} is not a folder.")
    config, label = copy.deepcopy(presets.load(preset)), presets.label(preset)
    if variant is not None:
        config = apply_variant(config, variant)
    train_params = config.setdefault("train_params", {})
    if epochs is not None:
        train_params["num_epochs"] = epochs
    if repeats is not None:
        train_params["num_repeats"] = repeats
    if loss is not None:
        train_params["loss"] = loss
    return config, label


@dataclass
class Start:
    """How a run starts: its configuration and settings, and for a resumed run the checkpoint
    it goes on from (None for a new run)."""

    config: dict
    settings: TrainSettings
    stored: Optional[dict] = None


def start_or_resume(out: Path, config: dict, settings: TrainSettings, init: Optional[Path], resume: bool,
                    force: bool, overrides: Optional[dict]) -> Start:
    """Check the inputs of a new run (``init``, the run folder), or read the checkpoint a resumed
    run goes on from. Creates nothing."""
    if init is not None and not resume and not Path(init).is_file():
        read_checkpoint(Path(init))  # its sentence for a missing file or a folder, before the run folder's
    prepare_run_folder(out, resume, force)
    if not resume:
        return Start(config, settings)
    path = latest_checkpoint(out)
    stored = read_checkpoint(path)
    if "train" not in stored:
        raise CopartError(f"{path} holds no training state to resume from.")
    return Start(stored["config"], resumed_settings(stored["train"], overrides), stored)


def prepare_run_folder(out: Path, resume: bool, force: bool, rank: int = 0) -> None:
    """Check that ``out`` can take the run (``resume``: it holds one; else it is new or empty,
    or ``force`` starts it over). Creates nothing: :func:`make_run_folder` makes the folder once
    the run's inputs have been checked."""
    out = Path(out)
    if resume:
        if not (out / "checkpoint.pth").is_file() and not any(out.glob("checkpoint-*.pth")):
            raise CopartError(f"{out} has no checkpoint.pth to resume from.")
        return
    if out.exists() and not out.is_dir():
        raise CopartError(f"Run folder {out} is a file, not a folder.")
    if out.exists() and any(out.iterdir()) and not force:
        raise CopartError(f"Run folder {out} already exists; pass --resume to continue it or --force to start over.")
    check_creatable(out)


def make_run_folder(out: Path) -> bool:
    """Create the run folder (or clear copart's files from one started over); True if created."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if p.name.startswith("checkpoint") or p.name in ("log.jsonl", "config.yaml", "train-vis", SNAPSHOTS):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return created


def remove_unstarted(out: Path, created: bool) -> None:
    """A new run that failed before its first checkpoint leaves no half-started folder behind."""
    if any(out.glob("checkpoint*.pth")):
        return
    for name in ("config.yaml", "log.jsonl"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "train-vis", ignore_errors=True)
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()

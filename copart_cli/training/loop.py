"""The training loop: one process on a CPU or GPU, or many with torchrun (DDP).

:func:`train` reads top to bottom as the steps of a run: start or resume (:mod:`.run`), join the
process group (:mod:`.processes`), build the model, make the run folder, prepare the optimizers
and the data, then the loop: each step is trained, agreed on by every process, then logged,
pictured (:mod:`.records`) and checkpointed (:mod:`.checkpoints`), until the step limit, the
time budget or a stop request (:mod:`.stopping`).

Run folder: ``checkpoint.pth`` (the latest: the checkpoints written every
``checkpoint_minutes`` for crash safety, and on a stop, replace it) and the numbered snapshots
``checkpoint-<step>.pth`` every ``checkpoint_every`` steps and at the end (``keep``: only that
many of the newest that the run wrote itself, listed in ``snapshots.json``), written atomically;
``log.jsonl`` with every loss; ``train-vis/<step>.png`` pictures; ``config.yaml``. ``resume``
continues from the latest checkpoint with the same step, optimizer, RNG and data order, and a
run bounded by ``minutes`` with what is left of its budget.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from copart import hub
from copart.models.checkpoint import load_init
from copart.models.config import ModelConfig
from copart.models.errors import CopartError, Interrupted
from copart.models.losses import Objective
from copart.models.model import CoPartModel

from . import checkpoints
from .checkpoints import SNAPSHOTS, latest_checkpoint
from .data import PairDataset, StepSampler, discover, epochs_to_steps
from .processes import any_of, distributed, first_of_each_machine, gather_generators, join, leave, start_processes
from .records import log_step, truncate_log, visualise, write_config, write_picture
from .run import (
    UNBOUNDED,
    Start,
    TrainSettings,
    make_run_folder,
    new_run_config,
    prepare_run_folder,
    remove_unstarted,
    resumed_settings,
    start_or_resume,
)
from .stopping import StopRequests, TrainingInterrupted, read_batches, worker_signals

# The names the commands, the demo, the benchmark and the tests take from here.
__all__ = [
    "SNAPSHOTS", "UNBOUNDED", "RunReport", "TrainSettings", "TrainingInterrupted", "TrainingModel",
    "first_of_each_machine", "latest_checkpoint", "new_run_config", "prepare_run_folder", "resumed_settings",
    "start_processes", "train", "visualise",
]


@dataclass
class RunReport:
    step: int = 0
    pairs_per_second: float = 0.0
    notes: list = field(default_factory=list)


class TrainingModel(nn.Module):
    """Model and objective in one module, so that DDP sees a single forward."""

    def __init__(self, model: CoPartModel, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, source, target, generator=None):
        return self.objective(self.model, source, target, generator)


@dataclass
class _Run:
    """One process's run: what it trains, with what, and the step it is at."""

    out: Path
    config: dict
    settings: TrainSettings
    stored: Optional[dict]  # the checkpoint a resumed run goes on from; None for a new run
    model_config: ModelConfig
    rank: int
    world: int
    device: str
    model: CoPartModel
    objective: Objective
    created: bool = False  # this run made its folder
    channels_last: bool = False
    optimizers: dict = field(default_factory=dict)
    generator: Optional[torch.Generator] = None  # the random transforms of this process
    train_model: Optional[nn.Module] = None  # model and objective, under DDP with many processes
    loader: Optional[DataLoader] = None
    amp: object = None  # the autocast context of the precision, or a null one
    scaler: Optional[torch.amp.GradScaler] = None
    step: int = 0
    limit: int = 0  # the step the run stops at

    def save(self, generators: list, numbered: bool = False) -> None:
        """Checkpoint this step (rank 0; ``generators``: every process's, gathered)."""
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        checkpoints.save(self.out, self.model, self.config, self.optimizers, generators, self.settings, self.step,
                         scaler, numbered=numbered)


def train(
    config: dict,
    out: Path,
    settings: TrainSettings,
    init: Optional[Path] = None,
    resume: bool = False,
    device: str = "cpu",
    label: str = "the configuration",
    on_step: Optional[Callable[[int, int, dict, float], None]] = None,
    warn: Callable[[str], None] = lambda message: None,
    resume_overrides: Optional[dict] = None,
    force: bool = False,
) -> RunReport:
    """Train (or resume) a run in ``out``. ``on_step(step, total, losses, pairs_per_s)`` reports
    progress on rank 0; a run with a time budget adds ``clock=(seconds spent, seconds of the
    budget)`` (over every start of the run), its ``total`` then being its step limit or None. A
    resume may change ``steps`` and ``minutes`` (how it ends: see :func:`resumed_settings`),
    ``workers``, ``checkpoint_every``, ``keep``, ``checkpoint_minutes`` and ``vis_every`` through
    ``resume_overrides``; nothing that changes what is computed."""
    out = Path(out)
    rank, world, _ = distributed()
    start = start_or_resume(out, config, settings, init, resume, force, resume_overrides)
    device = join(device, start.settings.batch_size)
    model_config = ModelConfig.from_dict(start.config, label)
    clips = _clips(start.settings, model_config, rank, warn)
    report = RunReport()
    run = _build(out, start, model_config, rank, world, device, None if resume else init, report)
    if start.stored is None and rank == 0:  # the inputs are checked: now the folder may be made
        run.created = make_run_folder(out)
    try:  # from here on a failure removes what this run made
        _prepare(run, clips, warn)
    except BaseException:
        if rank == 0 and run.stored is None:
            remove_unstarted(out, run.created)
        raise
    first_step = run.step
    stopped = _loop(run, report, on_step)
    report.step = max(report.step, first_step)
    if stopped:
        raise TrainingInterrupted(run.step, out)
    return report


def _clips(settings: TrainSettings, model_config: ModelConfig, rank: int, warn: Callable[[str], None]) -> list:
    """The training videos of the data folder (rank 0 warns of the unusable ones)."""
    clips, skipped = discover(Path(settings.data), "train", model_config.image_size[1], settings.seed)
    if skipped and rank == 0:
        warn(f"skipped {len(skipped)} unusable video(s): {', '.join(skipped)}")
    if not clips:
        raise CopartError(f"No usable videos in {settings.data} (need at least 2 frames each).")
    return clips


def _build(out: Path, start: Start, model_config: ModelConfig, rank: int, world: int, device: str,
           init: Optional[Path], report: RunReport) -> _Run:
    """The model (seeded; a new run's from ``init`` if given, its notes in ``report``) and the objective."""
    torch.manual_seed(start.settings.seed)
    model = CoPartModel(model_config)
    if init is not None:
        report.notes += load_init(init, model)
    objective = Objective(start.config.get("train_params", {}), model_config.num_channels, start.settings.loss,
                          vgg_weights=hub.vgg19_weights)
    return _Run(out, start.config, start.settings, start.stored, model_config, rank, world, device, model, objective)


def _prepare(run: _Run, clips: list, warn: Callable[[str], None]) -> None:
    """Everything the loop needs: the model on its device, the optimizers, the random transforms
    and the step (a resumed run's from its checkpoint), DDP, the data and the precision."""
    if run.world > 1:
        torch.distributed.barrier()
    run.model.to(run.device)
    run.objective.to(run.device)
    run.channels_last = run.device.startswith("cuda")
    if run.channels_last:
        run.model.to(memory_format=torch.channels_last)
    run.optimizers = _optimizers(run.model, run.config.get("train_params", {}))
    run.generator = torch.Generator().manual_seed(run.settings.seed * 1000 + run.rank)
    if run.stored is not None:
        run.step = checkpoints.restore(run.stored, run.model, run.optimizers, run.generator, run.rank, run.world,
                           run.settings.seed, warn)
        if run.rank == 0:
            truncate_log(run.out / "log.jsonl", run.step)
    elif run.rank == 0:
        write_config(run.out, run.config)
    run.train_model = _parallel(run)
    run.model.train()
    run.loader = _loader(run, clips)
    run.amp, run.scaler = _precision(run)


def _optimizers(model: CoPartModel, train_params: dict) -> dict:
    """One Adam for each module, at the configuration's learning rates."""
    return {
        "segmentation": torch.optim.Adam(model.segmentation_module.parameters(),
                                         lr=float(train_params.get("lr_segmentation", 2e-4)), betas=(0.5, 0.999)),
        "reconstruction": torch.optim.Adam(model.reconstruction_module.parameters(),
                                           lr=float(train_params.get("lr_reconstruction", 2e-4)), betas=(0.5, 0.999)),
    }


def _parallel(run: _Run) -> nn.Module:
    """Model and objective as one module; with many processes under DDP (synchronised batch norm on GPUs)."""
    train_model: nn.Module = TrainingModel(run.model, run.objective)
    if run.world > 1:
        cuda = run.device.startswith("cuda")
        if cuda:
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[torch.device(run.device).index] if cuda else None, find_unused_parameters=True,
        )
    return train_model


def _loader(run: _Run, clips: list) -> DataLoader:
    """This process's share of the pairs, in the run's order from its step on; sets the step
    limit (the epochs' steps when neither steps nor minutes bound the run)."""
    settings, train_params = run.settings, run.config.get("train_params", {})
    dataset_params = run.config.get("dataset_params", {})
    dataset = PairDataset(clips, run.model_config.image_size, dataset_params.get("augmentation_params"),
                          bool(dataset_params.get("id_sampling", False)),
                          int(dataset_params.get("min_frame_distance", 0)))
    repeats = int(train_params.get("num_repeats", 1))
    if settings.steps is None and not settings.minutes:
        settings.steps = epochs_to_steps(len(dataset), repeats, settings.batch_size,
                                         int(train_params.get("num_epochs", 1)))
    run.limit = settings.steps if settings.steps is not None else UNBOUNDED
    if settings.minutes and settings.spent_seconds >= settings.minutes * 60:
        run.limit = settings.steps = run.step  # its time budget is spent: a finished run
    sampler = StepSampler(len(dataset), settings.batch_size // run.world, repeats, settings.seed, run.step,
                          run.limit, run.rank, run.world)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=settings.workers,
                      pin_memory=run.device.startswith("cuda"),
                      worker_init_fn=worker_signals if settings.workers else None)


def _precision(run: _Run) -> tuple:
    """The autocast context of the run's precision and its gradient scaler (fp16 on GPUs; a
    resumed run's from its checkpoint)."""
    precision = run.settings.precision
    amp = (torch.autocast(torch.device(run.device).type,
                          dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
           if precision != "fp32" else contextlib.nullcontext())
    scaler = torch.amp.GradScaler(enabled=precision == "fp16" and run.device.startswith("cuda"))
    if run.stored is not None and "scaler" in run.stored:
        scaler.load_state_dict(run.stored["scaler"])
    return amp, scaler


@dataclass
class _Progress:
    """The loop's clock and counts: training time over every start of the run against its
    budget, the last save, the pairs trained in this start, and the step whose checkpoint exists."""

    settings: TrainSettings
    saved: int  # -1: none yet
    started: float = field(default_factory=time.perf_counter)
    pairs: int = 0
    budget: Optional[float] = None  # seconds, over every start of the run
    spent_before: float = 0.0
    shown_total: Optional[int] = None  # a real step count, or None for a run bounded by time alone
    last_save: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.budget = self.settings.minutes * 60 if self.settings.minutes else None
        self.spent_before = self.settings.spent_seconds
        self.shown_total = self.settings.steps

    def rate(self) -> float:
        """Pairs per second in this start."""
        return self.pairs / max(time.perf_counter() - self.started, 1e-9)


class _Trained(NamedTuple):
    """One trained step: its batch, its losses (as numbers) and what the model generated."""

    source: torch.Tensor
    target: torch.Tensor
    values: dict
    generated: dict


def _loop(run: _Run, report: RunReport, on_step: Optional[Callable]) -> bool:
    """Train until the step limit, the time budget or a stop request; True if a stop request
    ended the run (its step saved). The workers, the signal handlers, the log and the process
    group are let go of however it ends; a new run that failed before its first checkpoint
    leaves no folder behind."""
    progress = _Progress(run.settings, saved=run.step if run.stored is not None else -1)
    log = open(run.out / "log.jsonl", "a") if run.rank == 0 else None
    stop = StopRequests()
    batches = read_batches(run.loader, stop)
    completed = False
    try:
        stop.__enter__()
        stopped = _steps(run, batches, stop, progress, log, report, on_step)
        stopped = _stopped_waiting(run, stop, stopped, progress)
        completed = True
    finally:
        batches.close()  # the workers are shut down now, not at exit
        stop.__exit__()
        if log is not None:
            log.close()
        leave(run.world, completed)
        if not completed and run.rank == 0 and run.stored is None:
            remove_unstarted(run.out, run.created)
    return stopped


def _steps(run: _Run, batches, stop: StopRequests, progress: _Progress, log, report: RunReport,
           on_step: Optional[Callable]) -> bool:
    """The steps: train one, agree with the other processes on how to go on, then log, picture
    and checkpoint it. True if a stop request ends the run after the step it was asked in."""
    warmup = int(run.config.get("train_params", {}).get("warmup_steps", 0))
    base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in run.optimizers.items()}
    stopped = False
    for batch in batches:
        if warmup:  # copart: the learning rate rises linearly over the first warmup_steps
            _warm_up(run.optimizers, base_lr, min(1.0, (run.step + 1) / warmup))
        run.objective.at_step(run.step)
        trained = _optimise(run, batch)
        run.step += 1
        progress.pairs += trained.source.shape[0] * run.world
        stopped, due = _agree(run, trained.values, stop, progress)
        rate = progress.rate()
        report.step, report.pairs_per_second = run.step, rate
        snapshot = run.step % run.settings.checkpoint_every == 0 or run.step == run.limit  # numbered, and kept
        generators = None
        if snapshot or due or stopped:  # by time or on a stop: checkpoint.pth alone, replaced each time
            generators = gather_generators(run.generator, run.world)  # every process takes part
            progress.last_save = time.monotonic()
        if run.rank == 0:
            _record(run, trained, rate, log, generators, snapshot, progress, on_step)
        if generators is not None:
            progress.saved = run.step
        if stopped or run.step >= run.limit:
            break
    return stopped


def _warm_up(optimizers: dict, base_lr: dict, factor: float) -> None:
    """Every learning rate at ``factor`` of its configured value."""
    for name, opt in optimizers.items():
        for group, lr in zip(opt.param_groups, base_lr[name]):
            group["lr"] = lr * factor


def _optimise(run: _Run, batch: dict) -> _Trained:
    """One optimizer step on ``batch`` (on the run's device, at its precision)."""
    source = batch["source"].to(run.device, non_blocking=True)
    target = batch["target"].to(run.device, non_blocking=True)
    if run.channels_last:
        source = source.contiguous(memory_format=torch.channels_last)
        target = target.contiguous(memory_format=torch.channels_last)
    with run.amp:
        losses, generated = run.train_model(source, target, run.generator)
    total = sum(losses.values())
    for opt in run.optimizers.values():
        opt.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    for opt in run.optimizers.values():
        run.scaler.step(opt)
    run.scaler.update()
    values = {k: float(v.detach()) for k, v in losses.items()}
    values["total"] = float(total.detach())
    return _Trained(source, target, values, generated)


def _agree(run: _Run, values: dict, stop: StopRequests, progress: _Progress) -> tuple[bool, bool]:
    """Whether the run stops after this step, and whether a checkpoint is due by time: decided
    by every process together, so that all stop, and save, at the same step. A loss that is not
    finite ends the run with an error; a spent time budget makes this step the run's last."""
    settings = run.settings
    finite = all(np.isfinite(v) for v in values.values())
    due = 0 < settings.checkpoint_minutes * 60 <= time.monotonic() - progress.last_save
    requested = stop.requested
    settings.spent_seconds = progress.spent_before + (time.perf_counter() - progress.started)
    timed_out = progress.budget is not None and settings.spent_seconds >= progress.budget
    diverged, requested, due, timed_out = any_of([not finite, requested, due, timed_out], run.world, run.device)
    if timed_out and run.step < run.limit:  # the budget is spent: this step is the run's last
        run.limit = settings.steps = run.step
    stopped = requested and run.step < run.limit  # a stop asked on the last step: the run is done
    if diverged:
        raise CopartError(f"Training diverged at step {run.step} (a loss is not finite: {values}).")
    return stopped, due


def _record(run: _Run, trained: _Trained, rate: float, log, generators: Optional[list], snapshot: bool,
            progress: _Progress, on_step: Optional[Callable]) -> None:
    """Rank 0's part of a step: its log line, its picture when one is due, its checkpoint when
    ``generators`` were gathered for one, and the progress report."""
    log_step(log, run.step, trained.values, rate)
    vis_every = run.settings.vis_every
    if vis_every and (run.step % vis_every == 0 or run.step == run.limit):
        write_picture(run.out, run.step, trained.source, trained.target, trained.generated,
                      run.model_config.num_segments)
    if generators is not None:
        run.save(generators, numbered=snapshot)
    if on_step is not None:
        if progress.budget is None:
            on_step(run.step, run.limit, trained.values, rate)
        else:  # bounded by time: the clock against the budget, and the step limit if there is one
            on_step(run.step, progress.shown_total, trained.values, rate,
                    clock=(run.settings.spent_seconds, progress.budget))


def _stopped_waiting(run: _Run, stop: StopRequests, stopped: bool, progress: _Progress) -> bool:
    """Whether the run was stopped, counting a stop asked while it waited for data (the workers
    ended). Only this process knows of that one: with others, a collective here would meet
    theirs at another point, so it stops with what is saved; alone, it saves its step first."""
    if not stop.requested or stopped or run.step >= run.limit:
        return stopped
    if run.world > 1:
        kept = f"the run keeps its checkpoint of step {progress.saved}" if progress.saved >= 0 else "nothing was saved"
        raise Interrupted(f"interrupted while waiting for data; {kept}")
    if progress.saved != run.step:
        run.save(gather_generators(run.generator, run.world))
    return True

"""The training loop: one process on a CPU or GPU, or many with torchrun (DDP).

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
import copy
import json
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

from copart import hub, presets
from copart.media import render
from copart.media.write import atomic_path, write_atomic_text, write_image
from copart.models.checkpoint import (
    checkpoint_dict,
    load_init,
    read_checkpoint,
    save_atomic,
)
from copart.models.config import ModelConfig, apply_variant
from copart.models.errors import CopartError, Interrupted
from copart.models.files import check_creatable
from copart.models.losses import Objective
from copart.models.model import CoPartModel

from .data import PairDataset, StepSampler, discover, epochs_to_steps


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
SNAPSHOTS = "snapshots.json"  # the numbered snapshots a run wrote itself: the only ones --keep deletes
_SNAPSHOT_NAME = re.compile(r"checkpoint-\d{8}\.pth")


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


class TrainingInterrupted(Interrupted):
    """Ctrl-C or SIGTERM during training: the step in progress was finished and checkpointed."""

    def __init__(self, step: int, out: Path):
        super().__init__(f"interrupted at step {step}, which is saved in {Path(out) / 'checkpoint.pth'}")
        self.step, self.out = step, Path(out)


class _StopRequests:
    """SIGINT and SIGTERM while training ask to stop after the current step (a second one stops
    at once). Only the main thread can take signals; elsewhere this does nothing."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, signum, frame) -> None:
        if self.requested:
            raise Interrupted("interrupted at once by a second signal, in the middle of a step; the run keeps the "
                              "checkpoints written before it")
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _worker_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM to the main process, which stops after the
    step it is in (every rank at the same step) and then shuts its workers down itself; a worker
    whose main process is gone exits by PyTorch's own watchdog."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def start_processes(device: str) -> tuple[int, int, int]:
    """Rank, world size and local rank; under torchrun (WORLD_SIZE > 1) this process joins the
    process group first (once: NCCL on GPUs, gloo on CPUs)."""
    rank, world, local_rank = _distributed()
    if world > 1 and not torch.distributed.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, local_rank


def first_of_each_machine(work: Callable[[], object], device: str = "cpu"):
    """``work()`` (a download), done by the first process of each machine while the others wait
    for as long as it takes (a small collective every second, none that could time out). Its
    result on those processes, None on the others; a failure on any machine stops every process
    with the same sentence, the first failing rank's."""
    rank, world, local_rank = start_processes(device)
    if world == 1:
        return work()
    done: dict = {}

    def run() -> None:
        try:
            done["value"] = work()
        except CopartError as exc:
            done["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - it must reach the other processes, as a sentence
            done["error"] = f"{type(exc).__name__}: {exc}"

    worker = None
    if local_rank == 0:
        worker = threading.Thread(target=run, name="copart-first-of-machine", daemon=True)
        worker.start()
    flag_device = f"cuda:{local_rank}" if device.startswith("cuda") else "cpu"
    while True:  # every process takes part in each round, busy or not: the same collectives everywhere
        busy = torch.tensor([float(worker is not None and worker.is_alive())], device=flag_device)
        torch.distributed.all_reduce(busy, op=torch.distributed.ReduceOp.MAX)
        if not busy.item():
            break
        if worker is not None:
            worker.join(1.0)
        else:
            time.sleep(1.0)
    errors: list = [None] * world
    torch.distributed.all_gather_object(errors, done.get("error"))
    failed = next((e for e in errors if e), None)
    if failed is not None:
        torch.distributed.destroy_process_group()
        raise CopartError(failed)
    return done.get("value")


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


def prepare_run_folder(out: Path, resume: bool, force: bool, rank: int = 0) -> None:
    """Check that ``out`` can take the run (``resume``: it holds one; else it is new or empty,
    or ``force`` starts it over). Creates nothing: :func:`train` makes the folder once its
    inputs have been checked."""
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


def _make_run_folder(out: Path) -> bool:
    """Create the run folder (or clear copart's files from one started over); True if created."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if p.name.startswith("checkpoint") or p.name in ("log.jsonl", "config.yaml", "train-vis", SNAPSHOTS):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return created


def _remove_unstarted(out: Path, created: bool) -> None:
    """A new run that failed before its first checkpoint leaves no half-started folder behind."""
    if any(out.glob("checkpoint*.pth")):
        return
    for name in ("config.yaml", "log.jsonl"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "train-vis", ignore_errors=True)
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a killed run may have logged past its last checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            continue  # a line cut by the kill
    write_atomic_text(path, "".join(k + "\n" for k in kept))


def visualise(batch: dict, generated: dict, num_segments: int, limit: int = 4) -> np.ndarray:
    """Rows of source, target, warped source, reconstruction, target segmentation coloured,
    visibility (like the authors' train-vis)."""
    source, target = batch["source"][:limit].float(), batch["target"][:limit].float()
    size = target.shape[2:]
    columns = [source, target]
    if "deformed" in generated:
        columns.append(generated["deformed"][:limit].detach().float())
    columns.append(generated["prediction"][:limit].detach().float())
    seg = F.interpolate(generated["seg_target"].segmentation[:limit].detach().float(), size=size, mode="bilinear",
                        align_corners=False)
    colours = torch.from_numpy(render.palette(num_segments)).float() / 255
    columns.append(torch.einsum("bkhw,kc->bchw", seg.cpu(), colours))
    if "visibility_maps" in generated:
        vis = F.interpolate(generated["visibility_maps"][:limit].detach().float(), size=size, mode="bilinear",
                            align_corners=False)
        columns.append(vis.expand(-1, 3, -1, -1))
    rows = [torch.cat([c[i].cpu() for c in columns], dim=2) for i in range(len(source))]
    grid = torch.cat(rows, dim=1).clamp(0, 1)
    return (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


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
    rank, world, local_rank = _distributed()
    out = Path(out)
    if init is not None and not resume and not Path(init).is_file():
        read_checkpoint(Path(init))  # its sentence for a missing file or a folder, before the run folder's
    prepare_run_folder(out, resume, force, rank)
    report = RunReport()
    stored = None
    if resume:
        path = latest_checkpoint(out)
        stored = read_checkpoint(path)
        if "train" not in stored:
            raise CopartError(f"{path} holds no training state to resume from.")
        config = stored["config"]
        settings = resumed_settings(stored["train"], resume_overrides)
    start_processes(device)
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}" if world > 1 else device
        torch.cuda.set_device(device)
    if settings.batch_size % world:
        raise CopartError(f"Batch size {settings.batch_size} does not divide among {world} processes.")

    model_config = ModelConfig.from_dict(config, label)
    train_params = config.get("train_params", {})
    dataset_params = config.get("dataset_params", {})
    clips, skipped = discover(Path(settings.data), "train", model_config.image_size[1], settings.seed)
    if skipped and rank == 0:
        warn(f"skipped {len(skipped)} unusable video(s): {', '.join(skipped)}")
    if not clips:
        raise CopartError(f"No usable videos in {settings.data} (need at least 2 frames each).")

    torch.manual_seed(settings.seed)
    model = CoPartModel(model_config)
    if init is not None and not resume:
        report.notes += load_init(init, model)
    objective = Objective(train_params, model_config.num_channels, settings.loss, vgg_weights=hub.vgg19_weights)
    created = False
    if not resume and rank == 0:  # the inputs are checked: now the folder may be made
        created = _make_run_folder(out)
    try:  # from here on a failure removes what this run made
        if world > 1:
            torch.distributed.barrier()
        model.to(device)
        objective.to(device)
        channels_last = device.startswith("cuda")
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizers = {
            "segmentation": torch.optim.Adam(model.segmentation_module.parameters(),
                                             lr=float(train_params.get("lr_segmentation", 2e-4)), betas=(0.5, 0.999)),
            "reconstruction": torch.optim.Adam(model.reconstruction_module.parameters(),
                                               lr=float(train_params.get("lr_reconstruction", 2e-4)), betas=(0.5, 0.999)),
        }
        generator = torch.Generator().manual_seed(settings.seed * 1000 + rank)
        step = 0
        if stored is not None:
            for module in ("segmentation_module", "reconstruction_module"):
                getattr(model, module).load_state_dict(stored[module])
            for name, opt in optimizers.items():
                opt.load_state_dict(stored["optimizer"][name])
            states = stored["rng"].get("generators") or [stored["rng"]["generator"]]  # older runs: one
            if len(states) == world:  # each process's transforms go on where they stopped
                generator.set_state(states[rank])
            else:  # resumed on another number of processes: a fresh seed of each one's own
                generator.manual_seed(settings.seed * 1000 + rank + 7919 * int(stored["step"]))
                if rank == 0:
                    warn(f"the run was saved by {len(states)} process(es) and resumes on {world}: the same data order, "
                         f"but other random transforms than an uninterrupted run")
            torch.set_rng_state(stored["rng"]["torch"])
            step = int(stored["step"])
            if rank == 0:
                _truncate_log(out / "log.jsonl", step)
        elif rank == 0:
            write_atomic_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))

        train_model: nn.Module = TrainingModel(model, objective)
        if world > 1:
            if device.startswith("cuda"):
                train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
            train_model = nn.parallel.DistributedDataParallel(
                train_model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
                find_unused_parameters=True,
            )
        model.train()

        dataset = PairDataset(clips, model_config.image_size, dataset_params.get("augmentation_params"),
                              bool(dataset_params.get("id_sampling", False)),
                              int(dataset_params.get("min_frame_distance", 0)))
        if settings.steps is None and not settings.minutes:
            settings.steps = epochs_to_steps(len(dataset), int(train_params.get("num_repeats", 1)), settings.batch_size,
                                             int(train_params.get("num_epochs", 1)))
        limit = settings.steps if settings.steps is not None else UNBOUNDED  # the step the run stops at
        if settings.minutes and settings.spent_seconds >= settings.minutes * 60:
            limit = settings.steps = step  # its time budget is spent: a finished run
        sampler = StepSampler(len(dataset), settings.batch_size // world, int(train_params.get("num_repeats", 1)),
                              settings.seed, step, limit, rank, world)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=settings.workers,
                            pin_memory=device.startswith("cuda"),
                            worker_init_fn=_worker_signals if settings.workers else None)
        precision = settings.precision
        amp = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
               if precision != "fp32" else contextlib.nullcontext())
        scaler = torch.amp.GradScaler(enabled=precision == "fp16" and device.startswith("cuda"))
        if stored is not None and "scaler" in stored:
            scaler.load_state_dict(stored["scaler"])
    except BaseException:
        if rank == 0 and stored is None:
            _remove_unstarted(out, created)
        raise
    warmup = int(train_params.get("warmup_steps", 0))
    base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    started, pairs = time.perf_counter(), 0
    budget = settings.minutes * 60 if settings.minutes else None  # seconds, over every start of the run
    spent_before = settings.spent_seconds
    shown_total = settings.steps  # a real step count, or None for a run bounded by time alone
    last_save = time.monotonic()
    first_step, completed, stopped = step, False, False
    saved = step if stored is not None else -1  # the step whose checkpoint exists
    stop = _StopRequests()
    batches = _batches(loader, stop)
    try:
        stop.__enter__()
        for batch in batches:
            source = batch["source"].to(device, non_blocking=True)
            target = batch["target"].to(device, non_blocking=True)
            if channels_last:
                source = source.contiguous(memory_format=torch.channels_last)
                target = target.contiguous(memory_format=torch.channels_last)
            if warmup:  # copart: the learning rate rises linearly over the first warmup_steps
                factor = min(1.0, (step + 1) / warmup)
                for name, opt in optimizers.items():
                    for group, lr in zip(opt.param_groups, base_lr[name]):
                        group["lr"] = lr * factor
            with amp:
                losses, generated = train_model(source, target, generator)
            total = sum(losses.values())
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            for opt in optimizers.values():
                scaler.step(opt)
            scaler.update()
            step += 1
            pairs += source.shape[0] * world
            values = {k: float(v.detach()) for k, v in losses.items()}
            values["total"] = float(total.detach())
            finite = all(np.isfinite(v) for v in values.values())
            due = 0 < settings.checkpoint_minutes * 60 <= time.monotonic() - last_save
            stopped = stop.requested
            settings.spent_seconds = spent_before + (time.perf_counter() - started)
            timed_out = budget is not None and settings.spent_seconds >= budget
            if world > 1:  # every process stops, and saves, at the same step
                flags = torch.tensor([float(not finite), float(stopped), float(due), float(timed_out)], device=device)
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
                finite, stopped, due, timed_out = (not bool(flags[0]), bool(flags[1]), bool(flags[2]),
                                                   bool(flags[3]))
            if timed_out and step < limit:  # the budget is spent: this step is the run's last
                limit = settings.steps = step
            stopped = stopped and step < limit  # a stop asked on the last step: the run is done
            if not finite:
                raise CopartError(f"Training diverged at step {step} (a loss is not finite: {values}).")
            rate = pairs / max(time.perf_counter() - started, 1e-9)
            report.step, report.pairs_per_second = step, rate
            generators = None
            snapshot = step % settings.checkpoint_every == 0 or step == limit  # numbered, and kept
            if snapshot or due or stopped:  # by time or on a stop: checkpoint.pth alone, replaced each time
                generators = _gather_generators(generator, world)  # every process takes part
                last_save = time.monotonic()
            if rank == 0:
                log.write(json.dumps({"step": step, **values, "pairs_per_s": round(rate, 3)}) + "\n")
                log.flush()
                if settings.vis_every and (step % settings.vis_every == 0 or step == limit):
                    picture = visualise({"source": source, "target": target}, generated, model_config.num_segments)
                    (out / "train-vis").mkdir(exist_ok=True)
                    write_image(picture, out / "train-vis" / f"{step:08d}.png")
                if generators is not None:
                    _save(out, model, config, optimizers, generators, settings, step,
                          scaler.state_dict() if scaler.is_enabled() else None, numbered=snapshot)
                if on_step is not None:
                    if budget is None:
                        on_step(step, limit, values, rate)
                    else:  # bounded by time: the clock against the budget, and the step limit if there is one
                        on_step(step, shown_total, values, rate, clock=(settings.spent_seconds, budget))
            if generators is not None:
                saved = step
            if stopped or step >= limit:
                break
        if stop.requested and not stopped and step < limit:
            # Asked to stop while waiting for data (the workers ended). Only this process knows: with
            # others, a collective here would meet theirs at another point, so it stops with what is saved.
            stopped = True
            if world > 1:
                kept = f"the run keeps its checkpoint of step {saved}" if saved >= 0 else "nothing was saved"
                raise Interrupted(f"interrupted while waiting for data; {kept}")
            if saved != step:
                _save(out, model, config, optimizers, _gather_generators(generator, world), settings, step,
                      scaler.state_dict() if scaler.is_enabled() else None)
        completed = True
    finally:
        batches.close()  # the workers are shut down now, not at exit
        stop.__exit__()
        if log is not None:
            log.close()
        if world > 1 and torch.distributed.is_initialized():
            if completed:  # after an error the other processes may never reach a barrier
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        if not completed and rank == 0 and stored is None:
            _remove_unstarted(out, created)
    report.step = max(report.step, first_step)
    if stopped:
        raise TrainingInterrupted(step, out)
    return report


def _batches(loader, stop: Optional[_StopRequests] = None):
    """The loader's batches; a failure inside a worker becomes one sentence, not its traceback.
    After a stop request, a loader whose workers have ended just ends."""
    iterator = iter(loader)
    try:
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - worker errors arrive wrapped with their traceback
                if stop is not None and stop.requested:
                    return
                text = str(exc)
                if isinstance(exc, CopartError) and "Traceback" not in text:
                    raise
                lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
                reason = lines[-1] if lines else type(exc).__name__
                for prefix in ("copart.models.errors.CopartError: ", "CopartError: "):
                    if reason.startswith(prefix):
                        raise CopartError(reason[len(prefix):]) from None
                raise CopartError(f"Reading the training data failed: {reason}") from None
            yield batch
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)  # PyTorch's clean shutdown of the workers
        if shutdown is not None:
            shutdown()


def _gather_generators(generator: torch.Generator, world: int) -> list[torch.Tensor]:
    """Every process's transform-generator state, in rank order (a collective call)."""
    if world == 1:
        return [generator.get_state()]
    states: list = [None] * world
    torch.distributed.all_gather_object(states, generator.get_state())
    return states


def _save(out: Path, model: CoPartModel, config: dict, optimizers: dict, generators: list[torch.Tensor],
          settings: TrainSettings, step: int, scaler: Optional[dict] = None, numbered: bool = False) -> None:
    """Write ``checkpoint.pth`` (replacing the last one); ``numbered``: first as the snapshot
    ``checkpoint-<step>.pth``, then bound the snapshots to ``settings.keep``."""
    extra = {"scaler": scaler} if scaler is not None else {}
    data = checkpoint_dict(
        model, config, config.get("part_names"), step,
        optimizer={name: opt.state_dict() for name, opt in optimizers.items()},
        rng={"torch": torch.get_rng_state(), "generators": generators},
        train=settings.__dict__.copy(), **extra,
    )
    if not numbered:
        save_atomic(data, out / "checkpoint.pth")
        return
    snapshot = save_atomic(data, out / f"checkpoint-{step:08d}.pth")
    # The latest is the same bytes: copy them (atomically) rather than serialise twice.
    with atomic_path(out / "checkpoint.pth") as tmp:
        shutil.copyfile(snapshot, tmp)
    _keep_snapshots(out, snapshot, settings.keep)


def _identity(path: Path) -> list[int]:
    """What tells the file the run wrote from one put in its place since (size, time, inode)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _keep_snapshots(out: Path, written: Path, keep: Optional[int]) -> None:
    """Record ``written`` as one of the run's own snapshots, then delete the oldest of them beyond
    the newest ``keep``. Only files this run wrote and that are unchanged since go: a snapshot
    copied in, edited in place or left by another run stays, and so does ``checkpoint.pth``. The
    record is rewritten (atomically) before a file is deleted, so a kill in between leaves a file
    that will never be deleted, not a record of one that is gone."""
    record_path = out / SNAPSHOTS
    try:
        record = json.loads(record_path.read_text()).get("written", {}) if record_path.is_file() else {}
    except (OSError, ValueError, AttributeError):
        record = {}  # an unreadable record: the earlier snapshots are kept, not guessed at
    record = {name: ident for name, ident in record.items()
              if isinstance(name, str) and _SNAPSHOT_NAME.fullmatch(name) and (out / name).is_file()}
    record[written.name] = _identity(written)
    doomed = {}
    if keep is not None:
        newest_first = sorted(record, reverse=True)  # checkpoint-<8-digit step>.pth: by name is by step
        for name in newest_first[max(1, keep):]:
            if name != written.name:
                doomed[name] = record.pop(name)
    write_atomic_text(record_path, json.dumps({"written": record}, indent=1) + "\n")
    for name, ident in doomed.items():
        path = out / name
        try:
            if _identity(path) == list(ident):  # still the file this run wrote
                path.unlink()
        except OSError:
            continue  # gone already, or not ours to delete


def latest_checkpoint(out: Path) -> Path:
    """The checkpoint of the highest step in a run folder (a kill between the two writes
    of a step leaves either file the newer)."""
    numbered = sorted(Path(out).glob("checkpoint-*.pth"))
    latest = Path(out) / "checkpoint.pth"
    if not numbered:
        return latest
    if latest.is_file():
        try:
            if int(read_checkpoint(latest).get("step", -1)) >= int(numbered[-1].stem.split("-")[-1]):
                return latest
        except CopartError:
            pass
    return numbered[-1]

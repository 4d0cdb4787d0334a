"""A run's checkpoints: writing them, keeping only the newest snapshots, finding the latest,
and putting a resumed run back where it stopped.

``checkpoint.pth`` is the latest (replaced by every checkpoint: the numbered ones, the ones
written every ``checkpoint_minutes`` for crash safety, and the one written on a stop); the
numbered snapshots ``checkpoint-<step>.pth`` come every ``checkpoint_every`` steps and at the
end. With ``keep`` only that many of the newest that the run wrote itself stay; the run lists
them in ``snapshots.json``. Every file is written atomically.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch

from copart.media.write import atomic_path, write_atomic_text
from copart.models.checkpoint import checkpoint_dict, read_checkpoint, save_atomic
from copart.models.errors import CopartError
from copart.models.model import CoPartModel

if TYPE_CHECKING:
    from .run import TrainSettings

SNAPSHOTS = "snapshots.json"  # the numbered snapshots a run wrote itself: the only ones --keep deletes
_SNAPSHOT_NAME = re.compile(r"checkpoint-\d{8}\.pth")


def save(out: Path, model: CoPartModel, config: dict, optimizers: dict, generators: list[torch.Tensor],
         settings: "TrainSettings", step: int, scaler: Optional[dict] = None, numbered: bool = False) -> None:
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
    keep_snapshots(out, snapshot, settings.keep)


def _identity(path: Path) -> list[int]:
    """What tells the file the run wrote from one put in its place since (size, time, inode)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def keep_snapshots(out: Path, written: Path, keep: Optional[int]) -> None:
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


def restore(stored: dict, model: CoPartModel, optimizers: dict, generator: torch.Generator, rank: int, world: int,
            seed: int, warn: Callable[[str], None]) -> int:
    """Put a resumed run back where its checkpoint ``stored`` left it: the weights, the optimizers,
    the random state (each process's transforms go on where they stopped, if the run resumes on
    as many processes as saved it); the step it stopped at."""
    for module in ("segmentation_module", "reconstruction_module"):
        getattr(model, module).load_state_dict(stored[module])
    for name, opt in optimizers.items():
        opt.load_state_dict(stored["optimizer"][name])
    states = stored["rng"].get("generators") or [stored["rng"]["generator"]]  # older runs: one
    if len(states) == world:  # each process's transforms go on where they stopped
        generator.set_state(states[rank])
    else:  # resumed on another number of processes: a fresh seed of each one's own
        generator.manual_seed(seed * 1000 + rank + 7919 * int(stored["step"]))
        if rank == 0:
            warn(f"the run was saved by {len(states)} process(es) and resumes on {world}: the same data order, "
                 f"but other random transforms than an uninterrupted run")
    torch.set_rng_state(stored["rng"]["torch"])
    return int(stored["step"])

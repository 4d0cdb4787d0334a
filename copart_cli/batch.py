"""Many targets in one command: ``copart swap`` and ``copart segment`` given a folder of videos
or a glob pattern as TARGET.

The targets are taken in sorted order; the model and the source are made once for all of
them (the editing functions' ``reuse`` dict); an output that is already there is skipped (outputs
are written atomically, so a file under its final name is a complete one), so a killed batch
resumes where it stopped; one broken input does not stop the others. Under torchrun every
process takes its share of the sorted list (``rank::world_size``), each on its own GPU where
there are GPUs, and the first process reports on all of them.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from copart.media import read, write
from copart.models.errors import CopartError, Interrupted

# What a folder's files must end in to be taken as videos (a folder that holds images is one
# video made of frames, as for a single TARGET).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".gif", ".ts", ".mts", ".m2ts", ".mpg",
                  ".mpeg", ".wmv", ".flv", ".3gp", ".ogv"}
PATTERN_CHARACTERS = set("*?[")


def expand(target: Path) -> Optional[list[Path]]:
    """The targets ``target`` names when it names many, in sorted order: a folder of videos
    (its files ending in :data:`VIDEO_SUFFIXES`, hidden ones left out), or a glob pattern that
    is not itself a path (its matching files). None when it names one: a file, or a folder
    that holds images (a video made of frames)."""
    target = Path(target).expanduser()
    if target.is_dir():
        files = [p for p in target.iterdir() if p.is_file() and not p.name.startswith(".")]
        if any(read.is_image(p) for p in files):
            return None
        videos = sorted(p for p in files if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise CopartError(f"Folder {target} holds neither videos ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                              f"nor images.")
        return videos
    text = str(target)
    if not target.exists() and PATTERN_CHARACTERS & set(text):
        matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file() and not Path(p).name.startswith("."))
        if not matches:
            raise CopartError(f"No file matches the pattern {text}.")
        return matches
    return None


def output_folder(output: Optional[Path], what: str, flag: str = "-o") -> Path:
    """The folder ``flag`` names for a batch's outputs (``-o DIR``), created if missing (one
    sentence if it is not given or is a file)."""
    if output is None:
        raise CopartError(f"With many targets (a folder of videos or a pattern), -o DIR is required: each {what} "
                          f"is written to DIR under its input's name.")
    folder = Path(output).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CopartError(f"{flag} {output} is a file; with many targets {flag} names a folder for the outputs.")
    if not folder.exists() and folder.suffix.lower() in VIDEO_SUFFIXES | read.IMAGE_SUFFIXES:
        raise CopartError(f"{flag} {output} looks like a file name; with many targets {flag} names a folder for the "
                          f"outputs (it is created if missing).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write.unwritable(folder, exc) from None
    write.check_writable(folder)
    return folder


def named(folder: Path, target: Path) -> Path:
    """The output of ``target`` in ``folder``: its name, as an MP4 (an image target: a PNG)."""
    return folder / f"{target.stem}{'.png' if read.is_image(target) else '.mp4'}"


def check_names(targets: Sequence[Path], outputs: dict[Path, list[Path]]) -> None:
    """Each output belongs to one input and is no input itself (one sentence before anything is done)."""
    seen: dict[Path, Path] = {}
    inputs = {t.resolve() for t in targets}
    for target in targets:
        for path in outputs[target]:
            key = path.resolve()
            if key in seen:
                raise CopartError(f"{seen[key]} and {target} would both write {path}; outputs are named by the "
                                  f"input's name without its suffix, so give inputs distinct names.")
            if key in inputs:
                raise CopartError(f"The output {path} of {target.name} would be an input itself; copart never "
                                  f"overwrites its inputs: choose another folder for the outputs.")
            seen[key] = target


@dataclass
class Outcome:
    """What became of one input."""

    target: Path
    status: str  # done, skipped, failed
    note: str  # the output (done, skipped) or why it failed
    frames: int = 0
    seconds: float = 0.0
    rank: int = 0


@dataclass
class BatchResult:
    outcomes: list[Outcome]  # every input in sorted order; on a process that does not report, its own share only
    seconds: float
    world: int = 1
    reports: bool = True  # this process reports (prints the summary)
    shared_error: Optional[str] = None  # an error that concerns every input (the source, the model), if any
    processes: list[int] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count("failed")


# job(target, output, force, reuse, frames, notice, device) -> the Stats of that input (its frames)
Job = Callable[..., object]


def run(
    targets: Sequence[Path],
    outputs: dict[Path, list[Path]],
    job: Job,
    *,
    device: str,
    force: bool = False,
    prepare: Optional[Callable[[dict, str], None]] = None,
    progress=None,
    notice: Callable[[str], None] = lambda text: None,
) -> BatchResult:
    """Run ``job`` on each target this process takes, in order; ``outputs[target]`` lists what
    it writes (the first is the one it is known by; it counts as finished when all exist).
    ``device`` is resolved here (under torchrun: the process's own GPU where there are GPUs).
    ``prepare(reuse, device)`` makes what the jobs share before the first one (an error there
    stops the batch with its sentence; under torchrun it runs once per machine first, so that
    a download happens once; not at all when every output is there). ``progress``: a
    :class:`copart.ui.BatchProgress`-like object."""
    import torch

    from copart.loading import pick_device
    from copart.training import processes

    started = time.perf_counter()
    device = pick_device(device)
    rank, world, local_rank = processes.start_processes(device)  # under torchrun: joins the process group
    if world > 1 and device.startswith("cuda"):  # each process on its own GPU of its machine
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    reuse: dict = {}
    completed = False
    try:
        mine = list(targets)[rank::world]
        to_do = force or any(not p.exists() for t in mine for p in outputs[t])
        flag_device = device if device.startswith("cuda") else "cpu"
        if prepare is not None and processes.any_of([to_do], world, flag_device)[0]:  # nothing to make: no model
            processes.first_of_each_machine(lambda: prepare(reuse, device), device)  # downloads once a machine
            if not reuse:  # the other processes of the machine: from the files the first one fetched
                prepare(reuse, device)

        def share() -> tuple[list[Outcome], Optional[str]]:  # this process's targets, in order
            done: list[Outcome] = []
            shared: Optional[str] = None
            frames_made = 0
            for i, target in enumerate(mine):
                if progress is not None:
                    progress.files(i, len(mine), frames_made)
                paths = outputs[target]
                if not force and all(p.exists() for p in paths):
                    done.append(Outcome(target, "skipped", f"already made: {paths[0]}", rank=rank))
                    continue
                if shared is not None:
                    done.append(Outcome(target, "failed", f"not tried: {shared}", rank=rank))
                    continue
                t0 = time.perf_counter()
                frames = progress.file(target.name) if progress is not None else None
                try:  # a finished input's outputs are complete; a part left by a killed run is made again
                    stats = job(target, paths[0], force or any(p.exists() for p in paths), reuse, frames,
                                lambda text, name=target.name: notice(f"{name}: {text}"), device)
                except KeyboardInterrupt:
                    kept = sum(o.status != "failed" for o in done)
                    whose = " of this process" if world > 1 else ""
                    raise Interrupted(f"interrupted; {kept} finished output{'s' if kept != 1 else ''}{whose} "
                                      f"{'are' if kept != 1 else 'is'} kept, and the same command goes on from "
                                      f"there") from None
                except Exception as exc:  # noqa: BLE001 - one broken input does not stop the others
                    reason = reason_of(exc)
                    if getattr(exc, "shared", False):
                        shared = reason
                    done.append(Outcome(target, "failed", reason, seconds=time.perf_counter() - t0, rank=rank))
                    continue
                count = getattr(stats, "frames", 0)
                frames_made += count
                done.append(Outcome(target, "done", str(paths[0]), count, time.perf_counter() - t0, rank))
            if progress is not None:
                progress.files(len(mine), len(mine), frames_made)
            return done, shared

        if world == 1:
            outcomes, shared = share()
        else:
            import torch.distributed

            done, shared, error = _patiently(share, flag_device)
            shares: list = [None] * world
            torch.distributed.all_gather_object(shares, (done, shared, None if error is None else reason_of(error)))
            if error is not None:
                raise error
            failed = next((e for _, _, e in shares if e), None)
            if failed is not None:
                raise CopartError(f"Another process of the batch stopped ({failed.rstrip('.')}); the outputs "
                                  f"finished are kept, and the same command goes on from there.")
            order = {t: n for n, t in enumerate(targets)}
            outcomes = sorted((o for part, _, _ in shares for o in part), key=lambda o: order[o.target])
            shared = next((s for _, s, _ in shares if s), None)
        completed = True
    finally:
        processes.leave(world, completed)
    return BatchResult(outcomes, time.perf_counter() - started, world, rank == 0, shared)


def _patiently(work: Callable[[], tuple], flag_device: str) -> tuple:
    """``work()`` in a thread while this process takes part in a small collective every second
    until every process's work is done: one process may finish its share hours before another,
    and no collective waits longer than a second or two (the process group's timeout is
    minutes). Its result and None, or ([], None, the exception it raised)."""
    import threading

    import torch
    import torch.distributed

    result: dict = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread after the others heard
            result["error"] = exc

    worker = threading.Thread(target=run, name="copart-batch", daemon=True)
    worker.start()
    try:
        while True:
            busy = torch.tensor([float(worker.is_alive())], device=flag_device)
            torch.distributed.all_reduce(busy, op=torch.distributed.ReduceOp.MAX)
            if not busy.item():
                break
            worker.join(1.0)
    except KeyboardInterrupt:  # the input being made is left unfinished (its file is temporary)
        raise Interrupted("interrupted; the finished outputs are kept, and the same command goes on from there") \
            from None
    if "error" in result:
        return [], None, result["error"]
    return (*result["value"], None)


def reports() -> bool:
    """This process shows the progress and the summary (the first under torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def shown_as(command: str) -> str:
    """What the progress display is called: the command, and under torchrun whose share it shows."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return command if world == 1 else f"{command} (process 0 of {world}, its share)"


def reason_of(exc: BaseException) -> str:
    """Why an input failed, in one sentence."""
    if isinstance(exc, (CopartError, KeyboardInterrupt)):
        return str(exc) or "interrupted"
    if isinstance(exc, OSError) and exc.filename:
        return str(write.unwritable(exc.filename, exc)) if exc.errno in write.UNWRITABLE else \
            f"{exc.strerror or exc} ({exc.filename})."
    return (f"copart failed unexpectedly ({type(exc).__name__}: {exc}); run it alone with COPART_DEBUG=1 for "
            f"the details.")


def failures(result: BatchResult) -> str:
    """The sentence that ends a batch in which inputs failed."""
    if result.shared_error:
        return f"{result.shared_error.rstrip('.')}; this concerns every input, so the batch stopped there."
    n = result.failed
    return (f"{n} of {len(result.outcomes)} inputs failed (named in the table above, with why); the others are "
            f"finished, and running the same command again tries only what is not.")


def table(result: BatchResult) -> str:
    """The summary: one line per input (its result, frames, seconds, output or reason), then the counts."""
    rows = [("input", "result", "frames", "seconds", "output / reason")]
    if result.world > 1:
        rows = [(*rows[0][:4], "process", rows[0][4])]
    for o in result.outcomes:
        row = (o.target.name, o.status, str(o.frames) if o.status == "done" else "-",
               f"{o.seconds:.1f}" if o.status != "skipped" else "-")
        rows.append((*row, str(o.rank), o.note) if result.world > 1 else (*row, o.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    frames = sum(o.frames for o in result.outcomes)
    n = len(result.outcomes)
    lines.append(f"{n} input{'s' if n != 1 else ''}: {result.count('done')} done, "
                 f"{result.count('skipped')} skipped (already made), {result.failed} failed; {frames} frames in "
                 f"{result.seconds:.1f} s, {frames / max(result.seconds, 1e-9):.2f} frames/s"
                 + (f", {result.world} processes" if result.world > 1 else ""))
    return "\n".join(lines)

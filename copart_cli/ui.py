"""What the commands show on a terminal: progress bars and notices (rich). Only commands
import this; the jobs below them report through plain callables."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Optional

from rich import filesize
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def console() -> Console:
    """stderr, for progress and notices (stdout stays for results)."""
    return Console(stderr=True, highlight=False)


def notice(out: Console):
    """A ``notice(text)`` callable that prints ``Notice: text.``"""
    return lambda text: out.print(f"[yellow]Notice:[/] {escape(text)}.")


def warning(out: Console):
    """A ``warn(text)`` callable that prints ``Warning: text.``"""
    return lambda text: out.print(f"[yellow]Warning:[/] {escape(text)}.")


PLAIN_EVERY = 30.0
"""Seconds between the plain progress lines written where the output is not a terminal (a log
file, CI, a batch job): a line at the first update, then one at most this often, and the last
state at the end."""


def _clock(seconds: Optional[float]) -> str:
    """``H:MM:SS``, or ``-:--:--`` when not known."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _percent(done: float, total) -> str:
    return f" ({100 * done / total:.0f}%)" if total else ""


class _Bar:
    """A rich progress bar used as a context manager; its one task starts on the first update.
    Where the output is not a terminal, plain lines instead (see :data:`PLAIN_EVERY`)."""

    def __init__(self, bar: Progress, description: str, out: Console, disable: bool = False):
        self.bar, self.description, self.task, self.out = bar, description, None, out
        self.plain = not disable and not (out.is_terminal or out.is_jupyter)
        self._pending: Optional[str] = None  # the newest plain line, not yet written
        self._written_at: Optional[float] = None
        self._first: Optional[tuple[float, float]] = None  # (time, done) of the first update

    def __enter__(self):
        return self  # the display starts with the first update: until then (a model download) others may show

    def __exit__(self, *exc) -> None:
        if self.plain:
            if self._pending is not None:  # the last state, where the run ended
                self._write(self._pending)
            return
        if self.task is not None:
            self.bar.__exit__(*exc)

    def _update(self, done: int, total, start: int = 0, **fields) -> None:
        """Show ``done`` of ``total`` with the text ``fields``; the task starts at ``start``."""
        if self.task is None:
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description, total=total, completed=start,
                                          **{k: "-" if k == "rate" else "" for k in fields})
        self.bar.update(self.task, total=total, completed=done, **fields)

    def _since_first(self, done: float) -> tuple[float, Optional[float]]:
        """Seconds since the first update, and the rate of ``done`` since then (None at first)."""
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, done)
        elapsed = now - self._first[0]
        return elapsed, (done - self._first[1]) / elapsed if elapsed > 0 and done > self._first[1] else None

    def _line(self, line: str, final: bool = False) -> None:
        """A plain line: written now if it is the first, ``final`` or PLAIN_EVERY has passed;
        else kept as the one to write at the end."""
        now = time.monotonic()
        if final or self._written_at is None or now - self._written_at >= PLAIN_EVERY:
            self._write(line)
            self._written_at = now
        else:
            self._pending = line

    def _write(self, line: str) -> None:
        self.out.print(line, markup=False, highlight=False, soft_wrap=True)
        self._pending = None


class CountProgress(_Bar):
    """A progress bar for a count of items (frames, images): done, items/s, time left.

    Use as a context manager; calling it with ``(done, total)`` updates the bar.
    """

    def __init__(self, out: Console, description: str, unit: str = "frames"):
        self.unit = unit
        super().__init__(Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(f"{{task.fields[rate]}} {unit}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=out,
            transient=False,
        ), description, out)

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        if self.plain:
            elapsed, rate = self._since_first(done)
            left = (total - done) / rate if rate and total else None
            self._line(f"{self.description}: {done}{f'/{total}' if total else ''} {self.unit}{_percent(done, total)}, "
                       f"{f'{rate:.2f}' if rate else '-'} {self.unit}/s, {_clock(elapsed)} elapsed, "
                       f"ETA {_clock(left if total else None)}", final=bool(total) and done >= total)
            return
        elapsed = self.bar.tasks[0].elapsed if self.bar.tasks else None
        self._update(done, total, rate=f"{done / elapsed:.2f}" if done and elapsed else "-")


class TrainingProgress(_Bar):
    """The training line: step, pairs/s and time left first, then as many losses as fit in the
    terminal's width, under the names ``log.jsonl`` gives them. Called as ``(step, total, losses,
    rate)``; a run bounded by time adds ``clock=(seconds spent, seconds of the budget)``, and the
    bar then goes by time (``total`` is its step limit, or None)."""

    BAR = 16

    def __init__(self, out: Console, disable: bool = False):
        super().__init__(Progress(TextColumn("[bold]train"), BarColumn(bar_width=self.BAR),
                                  TextColumn("{task.fields[count]}"), TextColumn("{task.fields[rate]} pairs/s"),
                                  TextColumn("{task.fields[clock]}"), TextColumn("ETA {task.fields[eta]}"),
                                  TextColumn("{task.fields[losses]}"), console=out, disable=disable),
                         "train", out, disable)

    @staticmethod
    def ordered(losses: dict) -> list[tuple[str, float]]:
        """The losses, total first, each under its name in the log."""
        return sorted(losses.items(), key=lambda item: item[0] != "total")

    def losses_text(self, before: str, losses: dict) -> str:
        """The losses, total first, as many as fit beside the ``before`` part of the line."""
        text = ""
        for name, value in self.ordered(losses):
            term = f"{name} {value:.3f}"
            if len(before) + len(text) + len(term) + 2 > self.out.width:
                break
            text = f"{text} {term}".strip()
        return text

    def __call__(self, step: int, total: Optional[int], losses: dict, rate: float,
                 clock: Optional[tuple[float, float]] = None) -> None:
        elapsed, steps_per_s = self._since_first(step)
        left = (total - step) / steps_per_s if total and steps_per_s else None
        if clock is not None:  # by time: what is left of the budget, or of the steps if they end it first
            spent, budget = clock
            left = min(budget - spent, left) if left is not None else budget - spent
            count = f"step {step}{f'/{total}' if total else ''}"
            shown_clock = f"{_clock(spent)}/{_clock(budget)}"
        else:
            count, shown_clock = f"{step}/{total}", _clock(elapsed)
        shown = f"{rate:.1f}"
        if self.plain:
            where = (f"{count}, {shown_clock} of the time budget{_percent(clock[0], clock[1])}" if clock is not None
                     else f"step {count}{_percent(step, total)}, {shown_clock} elapsed")
            terms = ", ".join(f"{name} {value:.3f}" for name, value in self.ordered(losses))
            self._line(f"train: {where}, {shown} pairs/s, ETA {_clock(left)}; {terms}",
                       final=(bool(total) and step >= total) or (clock is not None and clock[0] >= clock[1]))
            return
        before = f"train {' ' * self.BAR} {count} {shown} pairs/s {shown_clock} ETA {_clock(left)}"
        fields = dict(count=count, rate=shown, clock=shown_clock, eta=_clock(left),
                      losses=self.losses_text(before, losses))
        if clock is not None:
            self._update(min(clock[0], clock[1]), clock[1], start=0, **fields)
        else:
            self._update(step, total, start=step - 1, **fields)


class BytesProgress(_Bar):
    """A download bar: bytes done of the total, speed, time left. Called as ``(done, total)``."""

    def __init__(self, out: Console, description: str):
        super().__init__(Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=out),
                         description, out)

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        if self.plain:
            elapsed, rate = self._since_first(done)
            left = (total - done) / rate if rate and total else None
            of = f" of {filesize.decimal(total)}" if total else ""
            self._line(f"{self.description}: {filesize.decimal(done)}{of}{_percent(done, total)}, "
                       f"{filesize.decimal(int(rate)) + '/s' if rate else '-'}, "
                       f"{_clock(elapsed)} elapsed, ETA {_clock(left)}", final=bool(total) and done >= total)
            return
        self._update(done, total)


def downloads(out: Console) -> SimpleNamespace:
    """How a model download reports on a terminal: one line, then a bytes bar."""
    return SimpleNamespace(say=lambda text: out.print(escape(text)), bar=lambda name: BytesProgress(out, name))


class BatchProgress(_Bar):
    """Many files in one display: files done of the total with frames/s over the whole batch,
    and under it the current file's bar (its frames, frames/s, time left). Where the output is
    not a terminal, plain lines (see :data:`PLAIN_EVERY`). ``file(name)`` starts a file and
    returns its ``(done, total)`` frame callable; ``files(done, total, frames)`` reports the
    files finished (done, skipped or failed) and the frames made so far."""

    def __init__(self, out: Console, description: str, disable: bool = False):
        super().__init__(Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[rate]} frames/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=out,
            transient=False,
            disable=disable,
        ), description, out, disable)
        self.disable = disable
        self.current: Optional[int] = None  # the rich task of the current file
        self.name = ""
        self._files = (0, 0)
        self._frames = 0  # frames of the files finished
        self._file_started = 0.0
        self._batch_started = time.perf_counter()

    def _rate(self, frames: float, since: float) -> Optional[float]:
        elapsed = time.perf_counter() - since
        return frames / elapsed if frames and elapsed > 0 else None

    def files(self, done: int, total: int, frames: int) -> None:
        self._files, self._frames = (done, total), frames
        rate = self._rate(frames, self._batch_started)
        if self.disable:
            return
        if self.plain:
            self._line(f"{self.description}: {done}/{total} files{_percent(done, total)}, {frames} frames, "
                       f"{f'{rate:.2f}' if rate else '-'} frames/s, "
                       f"{_clock(time.perf_counter() - self._batch_started)} elapsed", final=done >= total)
            return
        self._update(done, total, unit="files", rate=f"{rate:.2f}" if rate else "-")

    def file(self, name: str):
        """Start the file ``name``: the callable its frames report to."""
        self.name, self._file_started = name, time.perf_counter()
        if not self.disable and not self.plain:
            self.files(*self._files, self._frames)  # the batch line first, the file's bar under it
            if self.current is None:
                self.current = self.bar.add_task(name, total=None, unit="frames", rate="-")
            else:
                self.bar.reset(self.current, total=None, description=name, unit="frames", rate="-")

        def frames(done: int, total: Optional[int] = None) -> None:
            if self.disable:
                return
            rate = self._rate(done, self._file_started)
            shown = f"{rate:.2f}" if rate else "-"
            if self.plain:
                self._line(f"{self.description}: file {self._files[0] + 1}/{self._files[1]} {name}: "
                           f"{done}{f'/{total}' if total else ''} frames{_percent(done, total)}, {shown} frames/s")
                return
            self.bar.update(self.current, total=total, completed=done, rate=shown)
            whole = self._rate(self._frames + done, self._batch_started)
            self.bar.update(self.task, rate=f"{whole:.2f}" if whole else "-")

        return frames

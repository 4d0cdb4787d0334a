"""What the commands show on a terminal: progress bars and notices (rich). Only commands
import this; the jobs below them report through plain callables."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

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


class _Bar:
    """A rich progress bar used as a context manager; its one task starts on the first update."""

    def __init__(self, bar: Progress, description: str):
        self.bar, self.description, self.task = bar, description, None

    def __enter__(self):
        return self  # the display starts with the first update: until then (a model download) others may show

    def __exit__(self, *exc) -> None:
        if self.task is not None:
            self.bar.__exit__(*exc)

    def _update(self, done: int, total, start: int = 0, **fields) -> None:
        """Show ``done`` of ``total`` with the text ``fields``; the task starts at ``start``."""
        if self.task is None:
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description, total=total, completed=start,
                                          **{k: "-" if k == "rate" else "" for k in fields})
        self.bar.update(self.task, total=total, completed=done, **fields)


class CountProgress(_Bar):
    """A progress bar for a count of items (frames, images): done, items/s, time left.

    Use as a context manager; calling it with ``(done, total)`` updates the bar.
    """

    def __init__(self, out: Console, description: str, unit: str = "frames"):
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
        ), description)

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        elapsed = self.bar.tasks[0].elapsed if self.bar.tasks else None
        self._update(done, total, rate=f"{done / elapsed:.2f}" if done and elapsed else "-")


class TrainingProgress(_Bar):
    """The training line: step, pairs/s and time left first, then as many losses as fit in the
    terminal's width. Called as ``(step, total, losses, rate)``."""

    SHORT = {"equivariance_shift": "shift", "equivariance_affine": "affine", "total": "total"}
    BAR = 16

    def __init__(self, out: Console, disable: bool = False):
        self.out = out
        super().__init__(Progress(TextColumn("[bold]train"), BarColumn(bar_width=self.BAR),
                                  TextColumn("{task.completed}/{task.total}"),
                                  TextColumn("{task.fields[rate]} pairs/s"), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=out,
                                  disable=disable), "train")

    def losses_text(self, step: int, total: int, losses: dict, rate: str) -> str:
        """The losses, total first, as many as fit beside the rest of the line."""
        used = len(f"train {' ' * self.BAR} {step}/{total} {rate} pairs/s 0:00:00 ETA 0:00:00 ")
        terms = sorted(losses.items(), key=lambda item: item[0] != "total")
        text = ""
        for name, value in terms:
            term = f"{self.SHORT.get(name, 'rec')} {value:.3f}"
            if used + len(text) + len(term) + 1 > self.out.width:
                break
            text = f"{text} {term}".strip()
        return text

    def __call__(self, step: int, total: int, losses: dict, rate: float) -> None:
        shown = f"{rate:.1f}"
        self._update(step, total, start=step - 1, rate=shown, losses=self.losses_text(step, total, losses, shown))


class BytesProgress(_Bar):
    """A download bar: bytes done of the total, speed, time left. Called as ``(done, total)``."""

    def __init__(self, out: Console, description: str):
        super().__init__(Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=out),
                         description)

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        self._update(done, total)


def downloads(out: Console) -> SimpleNamespace:
    """How a model download reports on a terminal: one line, then a bytes bar."""
    return SimpleNamespace(say=lambda text: out.print(escape(text)), bar=lambda name: BytesProgress(out, name))

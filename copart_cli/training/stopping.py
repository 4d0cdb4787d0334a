"""How a run stops early: Ctrl-C and SIGTERM ask it to stop after the step it is in, and a
failure inside a DataLoader worker becomes one sentence."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

from copart.models.errors import CopartError, Interrupted


class TrainingInterrupted(Interrupted):
    """Ctrl-C or SIGTERM during training: the step in progress was finished and checkpointed."""

    def __init__(self, step: int, out: Path):
        super().__init__(f"interrupted at step {step}, which is saved in {Path(out) / 'checkpoint.pth'}")
        self.step, self.out = step, Path(out)


class StopRequests:
    """SIGINT and SIGTERM while training ask to stop after the current step (a second one stops
    at once). Only the main thread can take signals; elsewhere this does nothing."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "StopRequests":
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


def worker_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM to the main process, which stops after the
    step it is in (every rank at the same step) and then shuts its workers down itself; a worker
    whose main process is gone exits by PyTorch's own watchdog."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def read_batches(loader, stop: Optional[StopRequests] = None):
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
                if isinstance(exc, CopartError) and "Traceback" not in str(exc):
                    raise
                raise _one_sentence(exc) from None
            yield batch
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)  # PyTorch's clean shutdown of the workers
        if shutdown is not None:
            shutdown()


def _one_sentence(exc: Exception) -> CopartError:
    """A worker's failure (wrapped with its traceback) as copart's error: the worker's own
    sentence if it was one, else its last line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    for prefix in ("copart.models.errors.CopartError: ", "CopartError: "):
        if reason.startswith(prefix):
            return CopartError(reason[len(prefix):])
    return CopartError(f"Reading the training data failed: {reason}")

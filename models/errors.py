"""The one exception type users see.

Every error meant for a person is raised as :class:`CopartError` with a single
sentence that says what is wrong, which file, and what to do. The command line
turns it into that sentence on stderr and a non-zero exit code.
"""

from __future__ import annotations


class CopartError(Exception):
    """A user-facing error: its message is one complete sentence.

    ``topic`` names what went wrong in a word that callers may add their own advice to
    (the command line adds the flag that helps); the core's messages name no flags.
    """

    exit_code = 2

    def __init__(self, message: str, topic: str | None = None):
        super().__init__(message)
        self.topic = topic


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, handled: the work stopped cleanly and the message (one sentence,
    without its final full stop) says what was kept."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (FFmpeg's ``strerror`` when it has one), without
    its final full stop, for quoting inside a one-sentence error."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__

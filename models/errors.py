"""The one exception type users see.

Every error meant for a person is raised as :class:`CopartError` with a single
sentence that says what is wrong, which file, and what to do. The command line
turns it into that sentence on stderr and a non-zero exit code.
"""


class CopartError(Exception):
    """A user-facing error: its message is one complete sentence."""

    exit_code = 2

"""Files: writing so that nothing half-written ever appears under a final name, and telling
what a file is from its first bytes. (Whether the network may be used is the application's
business: ``copart.hub.offline``; the model core never downloads.)

The one implementation of atomic writes in copart: checkpoints, videos, images, masks and
logs all go through :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

from .errors import CopartError

# errno values that mean "this place cannot be written", not a bug: said as one sentence.
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR,
              errno.EISDIR, errno.EFBIG}


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def unwritable(path, exc: OSError) -> CopartError:
    """The one sentence for an OSError met while writing ``path`` (the user's name for it)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return CopartError(f"Cannot write {path}: {reason[0].lower()}{reason[1:]}.")


def check_writable(folder) -> None:
    """One sentence, before any heavy work, if files cannot be created in ``folder``."""
    folder = Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".copart-check-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CopartError(f"Cannot write to folder {folder}: {reason[0].lower()}{reason[1:]}.") from None
    os.close(fd)
    os.unlink(tmp)


def check_creatable(path) -> None:
    """One sentence if ``path`` (a folder, perhaps with missing parents) cannot be made: checks
    the nearest folder that exists."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise CopartError(f"{existing} is a file, so {path} cannot be made there.")
    check_writable(existing)


@contextlib.contextmanager
def atomic_path(final):
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block
    completes. On any error or Ctrl-C the temporary file is removed, and an OSError of the
    file system (read-only, full, no permission) becomes one sentence naming ``final``."""
    final = Path(final)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=final.parent)
    except OSError as exc:
        raise unwritable(final, exc) from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would make outputs private
        yield Path(tmp)
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise unwritable(final, exc) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# What a file that starts with the given bytes looks like ("a PNG image", "an MP4/MOV video"), for
# the message about a file that is not a checkpoint. The core knows no file format of its own: the
# application sets this (copart/__init__.py: copart.media.kinds.looks_like); None says nothing.
describe: Callable[[bytes], Optional[str]] = lambda head: None

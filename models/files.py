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
from typing import Optional

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


# First bytes of the files people give copart (or give in place of a checkpoint).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (b"OggS", "an Ogg video or sound"),
    (b"FLV\x01", "an FLV video"),
    (b"\x00\x00\x01\xba", "an MPEG video"),
    (b"\x00\x00\x01\xb3", "an MPEG video"),
    (b"ID3", "an MP3 sound"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
)
_RIFF = {b"WEBP": "a WebP image", b"AVI ": "an AVI video", b"WAVE": "a WAV sound"}
_HEIF_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis")


def looks_like(head: bytes) -> Optional[str]:
    """What a file that starts with ``head`` looks like ("an MP4/MOV video", "a text file"), or None."""
    if head[4:8] == b"ftyp":  # ISO base media: MP4, MOV, M4V, 3GP, HEIF, AVIF
        return "a HEIF/AVIF image" if head[8:12] in _HEIF_BRANDS else "an MP4/MOV video"
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":
        return "a BMP image"
    if len(head) > 188 and head[0] == head[188] == 0x47:  # MPEG-TS packets
        return "an MPEG-TS video"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head and all(b >= 0x20 or b in b"\t\n\r\f" for b in head):
        text = head.lstrip().lower()
        if text.startswith((b"<!doctype html", b"<html")):
            return "an HTML web page"
        return "a text file"
    return None


def sniff(path, size: int = 512) -> Optional[str]:
    """What the file at ``path`` looks like from its first bytes (see :func:`looks_like`)."""
    with open(path, "rb") as f:
        return looks_like(f.read(size))

"""What a file looks like from its first bytes (an image, a video, a text file...): for the
messages about a file given in the wrong place (a video where a checkpoint belongs, a checkpoint
where a video belongs). The model core asks through ``copart.models.files.describe``."""

from __future__ import annotations

from typing import Optional


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

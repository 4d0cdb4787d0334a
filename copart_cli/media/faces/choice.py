"""``--face``: which faces a video command processes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from copart.models.errors import CopartError


@dataclass(frozen=True)
class FaceChoice:
    """Which faces a video command processes (``--face``): ``largest`` (the largest face when
    faces first appear, then followed), ``index`` (the ``index``-th from the left, 1-based, in the
    first frame where that many faces are found), ``reference`` (the face that looks most like
    the face in the image ``reference``, if any looks like it) or ``all``. Only faces count (a
    detection seen CONFIRM_HITS times), never a tentative one; a face number or a reference
    that no face matches in the whole target is an error (:meth:`FaceTrack._check_choice`)."""

    mode: str = "largest"
    index: int = 0
    reference: Optional[Path] = None

    @property
    def several(self) -> bool:
        return self.mode == "all"

    def __str__(self) -> str:
        if self.mode == "index":
            return str(self.index)
        return str(self.reference) if self.mode == "reference" else self.mode


def parse_face(value, no_crop: bool = False) -> FaceChoice:
    """``--face``'s value: ``largest``, ``all``, a face number (1 = the leftmost) or the path of
    an image of the face to follow; anything else is one sentence. Anything but ``largest``
    (the default) needs face cropping (``no_crop`` False)."""
    choice = value if isinstance(value, FaceChoice) else _parse_face(value)
    if no_crop and choice.mode != "largest":
        raise CopartError(f"--face {choice} chooses among the faces copart finds, and --no-crop finds none; "
                          f"drop one of the two.")
    return choice


def _parse_face(value) -> FaceChoice:
    text = str(value).strip()
    if text.lower() in ("largest", "all"):
        return FaceChoice(text.lower())
    if re.fullmatch(r"[+-]?\d+", text):
        if int(text) < 1:
            raise CopartError(f"--face {text} is not a face number: faces are numbered from 1, the leftmost.")
        return FaceChoice("index", int(text))
    path = Path(text).expanduser()
    if path.is_file():
        return FaceChoice("reference", reference=path)
    what = "a folder" if path.is_dir() else "no such file"
    raise CopartError(f"--face takes largest, all, a face number (1 = the leftmost) or a reference image of the "
                      f"face to follow; '{text}' is none of these ({what}).")

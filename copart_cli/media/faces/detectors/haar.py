"""OpenCV's frontal-face Haar cascade: ships with opencv-python, needs no download."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from copart.models.errors import CopartError

# The cascade looks at frames scaled down to this many pixels on their short side (never up),
# so a run costs about the same at any resolution (a 1280x720 frame is searched at 462x260, an
# eighth of its pixels). It looks for faces of at least 20 pixels there (at 720p, 55 pixels).
# Chosen by measurement on two checks (2026-12-02): on Carphone scaled up to 720p the boxes stay
# within 3.6 px of those found on Carphone itself, on the same frames (200: within 4 px; 280:
# one frame more covered; 360, about the 640-pixel long side of before: 14 px); and the
# astronaut's face (about a fifth of a 640x480 frame's short side) is found in 22 of 22
# placements (200: in none, so eval --crop lost it; 240: 21).
# tests/test_detect_downscaled.py, tests/test_eval.py.
DETECT_SHORT_SIDE = 260
SMALLEST_FACE = 20  # pixels of the scaled frame (the cascade's window is 24)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: ships with opencv-python, needs no download."""

    name = "OpenCV Haar cascade"

    def __init__(self, short_side: int = DETECT_SHORT_SIDE, device: str = "cpu"):  # the cascade runs on the CPU
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise CopartError(f"OpenCV's face cascade {path} cannot be loaded; reinstall opencv-python<5.")
        self.short_side = short_side

    def scale_for(self, shape) -> float:
        """The factor a frame of ``shape`` is scaled by before the cascade looks at it (<= 1)."""
        return min(1.0, self.short_side / min(shape[:2]))

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """Faces in an RGB uint8 image as (x0, y0, x1, y1, score), in the image's pixels."""
        scale = self.scale_for(image.shape)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        smallest = max(SMALLEST_FACE, int(0.08 * min(gray.shape)))
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
        return [(x / scale, y / scale, (x + w) / scale, (y + h) / scale, 1.0) for x, y, w, h in found]

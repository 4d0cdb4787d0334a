"""OpenCV's frontal-face Haar cascade: ships with opencv-python, needs no download."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from copart.models.errors import CopartError

# The cascade looks at frames scaled down to this many pixels on their short side (never up),
# so a run costs about the same at any resolution (a 1280x720 frame is searched at 356x200, a
# ninth of its pixels). It looks for faces of at least 20 pixels there: a tenth of the frame's
# short side and more (at 720p, 72 pixels). On Carphone scaled up to 720p the boxes found this
# way stay within 4 pixels of those found on Carphone itself, every frame (the 640-pixel long
# side of before: up to 14; the whole 720p frame: 4.4, with 15 frames not covered);
# tests/test_detect_downscaled.py.
DETECT_SHORT_SIDE = 200
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

"""OpenCV's frontal-face Haar cascade: ships with opencv-python, needs no download."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from copart.models.errors import CopartError


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: ships with opencv-python, needs no download."""

    name = "OpenCV Haar cascade"

    def __init__(self, max_side: int = 640, device: str = "cpu"):  # the cascade runs on the CPU whatever the device
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise CopartError(f"OpenCV's face cascade {path} cannot be loaded; reinstall opencv-python<5.")
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """Faces in an RGB uint8 image as (x0, y0, x1, y1, score)."""
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        smallest = max(20, int(0.08 * min(gray.shape)))
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
        return [(x / scale, y / scale, (x + w) / scale, (y + h) / scale, 1.0) for x, y, w, h in found]

"""A face's appearance, for telling faces apart (the tracker) and for ``--face IMAGE``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from copart.models.errors import CopartError

from .box import best_face

_HOG: list = []


def describe(image: np.ndarray, face) -> Optional[np.ndarray]:
    """A face's appearance, for telling faces apart when the detector gives no landmarks: HOG
    of the face box in grey at 32x32 (shape: eyes, brows, mouth, pose; not mirror-symmetric)
    and a hue-saturation histogram (skin, hair, lighting colour), as one unit vector whose dot
    product with another is ``0.8 * HOG cosine + 0.2 * Bhattacharyya coefficient``. None for a
    box too small or off the frame."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in face[:4])
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    region = image[y0:y1, x0:x1]
    if not _HOG:
        _HOG.append(cv2.HOGDescriptor((32, 32), (16, 16), (8, 8), (8, 8), 9))
    grey = cv2.resize(cv2.cvtColor(region, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    hog = _HOG[0].compute(grey).ravel().astype(np.float32)
    hog -= hog.mean()
    hog /= float(np.linalg.norm(hog)) + 1e-6
    hist = cv2.calcHist([cv2.cvtColor(region, cv2.COLOR_RGB2HSV)], [0, 1], None, [8, 8], [0, 180, 0, 256]).ravel()
    hist = np.sqrt(hist / max(float(hist.sum()), 1.0))
    return np.concatenate([math.sqrt(0.8) * hog, math.sqrt(0.2) * hist]).astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / (float(np.linalg.norm(v)) + 1e-9)


def reference_face(detector, path: Path) -> np.ndarray:
    """The appearance of the (largest) face in the image at ``path``, for ``--face PATH``
    (an image without a face is an error of topic ``face-reference``)."""
    from ..read import read_image

    image = read_image(path, "Reference image")
    face = best_face(detector.detect(image))
    descriptor = describe(image, face) if face is not None else None
    if descriptor is None:
        raise CopartError(f"No face found in reference image {path}.", topic="face-reference")
    return descriptor

"""What every face detector is: a name and ``detect(image)``."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Detector(Protocol):
    """A face detector: made as ``Detector(device=...)``, it finds faces in RGB uint8 images as
    ``(x0, y0, x1, y1, score)`` tuples, in pixels of the image. A detector that cannot run here
    (missing weights, a broken install) raises :class:`DetectorUnavailable` when made."""

    name: str

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float, float]]: ...


class DetectorUnavailable(Exception):
    """Why a detector cannot run here, in a clause that fits "…, so faces are found with Haar"."""

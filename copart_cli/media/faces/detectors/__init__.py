"""Face detectors, chosen by name from one registry.

Each detector is one module here with one class (see :class:`Detector`); :data:`DETECTORS`
names them (``"module:Class"``, imported when first made), the preferred one first. ``auto`` is the preferred detector, or the fallback (one
that needs nothing it might not have) with a notice saying why.
"""

from __future__ import annotations

import importlib
from typing import Optional, Union

from copart.models.errors import CopartError

from .base import Detector, DetectorUnavailable
from .haar import HaarDetector
from .s3fd import S3FD_URL, S3FDDetector, s3fd_folder

DETECTORS: dict[str, Union[str, type]] = {
    "face-alignment": "s3fd:S3FDDetector",
    "haar": "haar:HaarDetector",
}
PREFERRED = "face-alignment"  # what ``auto`` tries first
FALLBACK = "haar"  # what ``auto`` falls back to: it ships with OpenCV, no download
FALLBACK_SAID = "OpenCV's Haar cascade (no download, less accurate)"

__all__ = [
    "DETECTORS",
    "S3FD_URL",
    "Detector",
    "DetectorUnavailable",
    "HaarDetector",
    "S3FDDetector",
    "check_detector",
    "detector_class",
    "make_detector",
    "s3fd_folder",
]


def detector_class(name: str) -> type:
    """The class of the detector ``name`` (a key of :data:`DETECTORS`)."""
    entry = DETECTORS[name]
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return entry


def check_detector(kind: str) -> None:
    """Refuse a detector name that is neither ``auto`` nor a key of :data:`DETECTORS`, before any
    work (a detector already made, not a name, passes)."""
    if isinstance(kind, str) and kind != "auto" and kind not in DETECTORS:
        raise CopartError(f"There is no face detector called {kind!r}; the detectors are auto, "
                          f"{', '.join(DETECTORS)}.")


def make_detector(kind: str = "auto", device: str = "cpu", notices: Optional[list] = None) -> Detector:
    """The detector named ``kind`` (a key of :data:`DETECTORS`), or for ``auto`` the preferred
    one (S3FD when its weights are cached or can be fetched), else the fallback with a notice
    that says what actually happened (offline by choice, a failed download and why, weights
    that would not load) and where the weights belong. A named detector that cannot run is an
    error (topic ``face-detector``: the command line names the fallback)."""
    check_detector(kind)
    wanted = PREFERRED if kind == "auto" else kind
    try:
        return detector_class(wanted)(device=device)
    except DetectorUnavailable as exc:
        if kind != "auto":
            raise CopartError(f"The {wanted} detector cannot run: {exc}.", topic="face-detector") from None
        if notices is not None:
            notices.append(f"{exc}, so faces are found with {FALLBACK_SAID}")
        return detector_class(FALLBACK)(device=device)

"""Face detection, tracking, square crops and feathered paste-back.

The rooms:

- :mod:`.detectors`: the detectors, chosen by name from one registry (:data:`DETECTORS`):
  face-alignment's S3FD (its weights come from the internet once, then from PyTorch's hub
  cache) and, where those cannot be had, the Haar cascade that OpenCV ships (no download).
  A new detector is one file there and one line in the registry.
- :mod:`.choice`: ``--face`` (:class:`FaceChoice`: the largest, the N-th from the left, the one
  most like a reference picture, or all).
- :mod:`.descriptor`: a face's appearance, for telling faces apart.
- :mod:`.tracks`, :mod:`.smoothing`, :mod:`.tracker`: a :class:`FaceTrack` turns per-frame
  detections into tracks, one per person (linked by motion and appearance), and gives the
  chosen ones as smooth square crop boxes per frame, carrying a box across frames where the
  detector misses its face for a bounded time.
- :mod:`.paste`: crops, and :func:`paste_all`, which puts several crops back without seams.
"""

from __future__ import annotations

from .box import Box, best_face, face_to_box
from .choice import FaceChoice, parse_face
from .descriptor import describe, reference_face
from .detectors import (
    DETECTORS,
    S3FD_URL,
    Detector,
    DetectorUnavailable,
    HaarDetector,
    S3FDDetector,
    check_detector,
    make_detector,
    s3fd_folder,
)
from .paste import centre_weight, crop, feather_mask, paste, paste_all
from .tracker import REFERENCE_SIMILARITY, FaceSummary, FaceTrack
from .tracks import (
    APPEARANCE_DECAY,
    APPEARANCE_WEIGHT,
    CONFIRM_HITS,
    GATE,
    GATE_MAX,
    GATE_PER_FRAME,
    PREDICT_FRAMES,
    REID_SIMILARITY,
    TENTATIVE_FRAMES,
    TENTATIVE_MISS,
)

# Face tracking: detections are averaged over TRACK_WINDOW frames either side, and a box is
# carried for up to MAX_GAP_SECONDS where the detector misses the face.
TRACK_WINDOW = 8
MAX_GAP_SECONDS = 2.0
# The detector runs on this many frames a second (every 5th at 25 frames/s, every 6th at 30),
# and again on the next frame wherever it missed a face it was following or a new face is not
# yet confirmed; the smoothing fills the frames between. A frame it does not run on tells
# nothing: it is no miss (see FaceTrack).
DETECTIONS_PER_SECOND = 5

__all__ = [
    "APPEARANCE_DECAY",
    "APPEARANCE_WEIGHT",
    "CONFIRM_HITS",
    "DETECTIONS_PER_SECOND",
    "DETECTORS",
    "GATE",
    "GATE_MAX",
    "GATE_PER_FRAME",
    "MAX_GAP_SECONDS",
    "PREDICT_FRAMES",
    "REFERENCE_SIMILARITY",
    "REID_SIMILARITY",
    "S3FD_URL",
    "TENTATIVE_FRAMES",
    "TENTATIVE_MISS",
    "TRACK_WINDOW",
    "Box",
    "Detector",
    "DetectorUnavailable",
    "FaceChoice",
    "FaceSummary",
    "FaceTrack",
    "HaarDetector",
    "S3FDDetector",
    "best_face",
    "centre_weight",
    "crop",
    "describe",
    "detect_every_for",
    "face_to_box",
    "feather_mask",
    "check_detector",
    "make_detector",
    "make_track",
    "parse_face",
    "paste",
    "paste_all",
    "reference_face",
    "s3fd_folder",
]


def make_track(kind, device: str, margin: float, fps, notices: list, face="largest") -> FaceTrack:
    """The face track the video commands use: ``kind``'s detector (or ``kind`` itself, a detector
    already made: a batch makes one for all its videos), copart's smoothing and gap,
    and ``face`` (a :class:`FaceChoice` or ``--face``'s text) for which faces it gives.
    (The detector comes from this module's ``make_detector``, so a test may replace it here.)"""
    choice = parse_face(face)
    detector = make_detector(kind, device, notices) if isinstance(kind, str) else kind
    reference = reference_face(detector, choice.reference) if choice.mode == "reference" else None
    fps = float(fps or 25)
    return FaceTrack(detector, margin, TRACK_WINDOW, round(MAX_GAP_SECONDS * fps), choice, reference,
                     detect_every_for(fps))


def detect_every_for(fps) -> int:
    """Every how many frames the detector runs at ``fps`` frames a second (DETECTIONS_PER_SECOND
    times a second: every 5th frame at 25, 6th at 30, 12th at 60; every frame at 5 or fewer).
    :class:`FaceTrack` holds back the frames it skips until its next run."""
    return max(1, round(float(fps or 25) / DETECTIONS_PER_SECOND))

"""Face detection, tracking, square crops and feathered paste-back.

Two detectors behind one interface: face-alignment's S3FD (its weights come from the
internet once, then from PyTorch's hub cache) and, where those cannot be had, the
Haar cascade that OpenCV ships (no download). A :class:`FaceTrack` turns per-frame
detections into a smooth square crop box per frame, carrying it across frames where
the detector misses the face for a bounded time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from copart.models.errors import CopartError, first_line
from copart.models.files import offline

S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
S3FD_HASH = "619a316812"  # torch.hub checks that the file's sha256 starts so (the name says it)
# Face tracking: detections are averaged over TRACK_WINDOW frames either side, and a box is
# carried for up to MAX_GAP_SECONDS where the detector misses the face.
TRACK_WINDOW = 8
MAX_GAP_SECONDS = 2.0
# The detector runs on this many frames a second (every 5th at 25 frames/s; again on the next
# frame where it missed); the smoothing fills the frames between.
DETECTIONS_PER_SECOND = 5


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


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: ships with opencv-python, needs no download."""

    name = "OpenCV Haar cascade"

    def __init__(self, max_side: int = 640):
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


class DetectorUnavailable(Exception):
    """Why S3FD cannot run here, in a clause that fits "…, so faces are found with Haar"."""


def s3fd_folder() -> Path:
    """Where face-alignment's detector weights belong: PyTorch's hub cache."""
    import torch

    return (Path(torch.hub.get_dir()) / "checkpoints").expanduser().resolve()


class S3FDDetector:
    """face-alignment's S3FD detector (what the paper's data preparation used)."""

    name = "face-alignment S3FD"

    def __init__(self, device: str = "cpu", max_side: int = 640):
        import torch

        try:
            from face_alignment.detection.sfd.sfd_detector import SFDDetector
        except Exception as exc:  # noqa: BLE001 - a broken install is said, not raised
            raise DetectorUnavailable(f"face-alignment cannot be imported ({first_line(exc)})") from None
        folder = s3fd_folder()
        cached = folder / Path(S3FD_URL).name
        if not cached.is_file():
            if offline():
                raise DetectorUnavailable(f"COPART_OFFLINE=1 and face-alignment's detector weights are not in "
                                          f"{folder} (put {cached.name} from {S3FD_URL} there)")
            try:
                folder.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(S3FD_URL, str(cached), hash_prefix=S3FD_HASH, progress=False)
            except Exception as exc:  # noqa: BLE001 - any failure to fetch is said once
                cached.unlink(missing_ok=True)
                raise DetectorUnavailable(f"face-alignment's detector weights could not be downloaded from "
                                          f"{S3FD_URL} ({first_line(exc)}; put {cached.name} in {folder})") from None
        try:
            self.detector = SFDDetector(device=device, path_to_detector=str(cached))
        except Exception as exc:  # noqa: BLE001
            raise DetectorUnavailable(f"face-alignment's detector weights {cached} are there but could not be "
                                      f"loaded ({first_line(exc)}; delete the file to fetch it again)") from None
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        boxes = self.detector.detect_from_image(np.ascontiguousarray(small[..., ::-1]))
        return [(b[0] / scale, b[1] / scale, b[2] / scale, b[3] / scale, float(b[4])) for b in boxes]


def make_detector(kind: str = "auto", device: str = "cpu", notices: Optional[list] = None):
    """``auto``: S3FD when its weights are cached or can be fetched, else Haar with a notice
    that says what actually happened (offline by choice, a failed download and why, weights
    that would not load) and where the weights belong."""
    if kind == "haar":
        return HaarDetector()
    try:
        return S3FDDetector(device)
    except DetectorUnavailable as exc:
        if kind == "face-alignment":
            raise CopartError(f"The face-alignment detector cannot run: {exc}; or use --detector haar.") from None
        if notices is not None:
            notices.append(f"{exc}, so faces are found with OpenCV's Haar cascade (no download, less accurate)")
        return HaarDetector()


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


class FaceTrack:
    """Per-frame crop boxes from per-frame detections, smoothed over time.

    Each frame's box is the Gaussian-weighted mean of the detections within
    ``window`` frames either side (a look-ahead of ``window`` frames is buffered, so
    memory stays bounded). Where no detection is that near, the last box is carried
    for up to ``max_gap`` frames; beyond that the frame has no box. The detector runs on
    every ``detect_every``-th frame, and on the next frame after a miss.
    """

    def __init__(self, detector, margin: float = 0.3, window: int = 8, max_gap: int = 60, detect_every: int = 1):
        self.detector = detector
        self.detect_every = max(1, int(detect_every))
        self._countdown = 0  # frames until the next detection
        self.margin = margin
        self.window = max(0, int(window))
        self.max_gap = int(max_gap)
        self.whole_frame: Optional[bool] = None
        self._ahead: deque = deque()  # (item, detection box or None), not yet emitted
        self._behind: deque = deque(maxlen=self.window)  # detections of emitted frames
        self._last: Optional[Box] = None
        self._since_box = 0  # frames emitted since the last one with a nearby detection
        self.detections = 0

    def track(self, frames: Iterable, image_of=lambda f: f.image) -> Iterator[tuple[object, Optional[Box]]]:
        """Yield ``(frame, box or None)`` for every frame, in order."""
        for frame in frames:
            image = image_of(frame)
            box = None
            if self._countdown <= 0:
                face = best_face(self.detector.detect(image), self._last)
                box = face_to_box(face, self.margin) if face is not None else None
                self._countdown = self.detect_every if box is not None else 1
            self._countdown -= 1
            if box is not None:
                self.detections += 1
                if self.whole_frame is None:
                    self.whole_frame = _is_face_crop(box, image.shape)
            self._ahead.append((frame, image.shape, box))
            if len(self._ahead) > self.window:
                yield self._emit()
        while self._ahead:
            yield self._emit()

    def _emit(self):
        frame, shape, box = self._ahead.popleft()
        if self.whole_frame:
            self._behind.append(box)
            return frame, Box(shape[1] / 2, shape[0] / 2, min(shape[:2])) if _square(shape) else None
        near = [(-(len(self._behind) - i), b) for i, b in enumerate(self._behind)]
        near += [(0, box)] + [(i + 1, b) for i, (_, _, b) in enumerate(self._ahead)]
        weights, values = [], []
        sigma = max(1.0, self.window / 2)
        for offset, b in near:
            if b is not None:
                weights.append(math.exp(-(offset**2) / (2 * sigma**2)))
                values.append((b.cx, b.cy, b.side))
        if values:
            w = np.asarray(weights)[:, None]
            cx, cy, side = (np.asarray(values) * w).sum(0) / w.sum()
            self._last = Box(float(cx), float(cy), float(side))
            self._since_box = 0 if box is not None else self._since_box + 1
            # A frame without a detection remembers the box it got (smoothed or carried) as
            # if detected, so the track glides, rather than jumps, where the detector misses.
            self._behind.append(box if box is not None else self._last)
            return frame, self._last
        self._since_box += 1
        if self._last is not None and self._since_box <= self.max_gap:
            self._behind.append(self._last)
            return frame, self._last
        self._behind.append(None)
        return frame, None


def _square(shape) -> bool:
    h, w = shape[:2]
    return abs(h - w) <= 0.1 * max(h, w)


def _is_face_crop(box: Box, shape) -> bool:
    """A roughly square frame that the face's crop would (nearly) fill is already a face crop."""
    return _square(shape) and box.side >= 0.9 * min(shape[:2])


def crop(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The square ``box`` of an RGB image, edge-padded where it leaves the frame, resized to ``size``."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box.bounds()
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    region = image[y0:y1, x0:x1]
    interpolation = cv2.INTER_AREA if region.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interpolation)


_FEATHER_CACHE: dict = {}


def feather_mask(side: int, feather: int) -> np.ndarray:
    """``(side, side, 1)`` float32: 1 inside, ramping to 0 over ``feather`` pixels at the edge."""
    key = (side, feather)
    if key not in _FEATHER_CACHE:
        ramp = np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5)
        ramp = np.clip(ramp / max(1, feather), 0, 1).astype(np.float32)
        if len(_FEATHER_CACHE) > 64:
            _FEATHER_CACHE.clear()
        _FEATHER_CACHE[key] = np.minimum(ramp[:, None], ramp[None, :])[..., None]
    return _FEATHER_CACHE[key]


def paste(image: np.ndarray, patch: np.ndarray, box: Box, feather: float = 0.08) -> np.ndarray:
    """Paste a square ``patch`` (model output) back into ``box`` of ``image`` with a feathered
    edge; pixels outside the box are untouched. Returns a new image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box.bounds()
    side = x1 - x0
    interpolation = cv2.INTER_AREA if patch.shape[0] > side else cv2.INTER_LINEAR
    patch = cv2.resize(patch, (side, side), interpolation=interpolation)
    mask = feather_mask(side, max(2, int(round(feather * side))))
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return image
    out = image.copy()
    region = out[cy0:cy1, cx0:cx1].astype(np.float32)
    p = patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0].astype(np.float32)
    m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    out[cy0:cy1, cx0:cx1] = np.clip(region + m * (p - region) + 0.5, 0, 255).astype(np.uint8)
    return out


def make_track(kind: str, device: str, margin: float, fps, notices: list) -> "FaceTrack":
    """The face track the video commands use: ``kind``'s detector, copart's smoothing and gap."""
    detector = make_detector(kind, device, notices)
    fps = float(fps or 25)
    return FaceTrack(detector, margin, TRACK_WINDOW, int(round(MAX_GAP_SECONDS * fps)),
                     max(1, int(round(fps / DETECTIONS_PER_SECOND))))

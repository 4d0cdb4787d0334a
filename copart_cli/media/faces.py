"""Face detection, tracking, square crops and feathered paste-back.

Two detectors behind one interface: face-alignment's S3FD (its weights come from the
internet once, then from PyTorch's hub cache) and, where those cannot be had, the
Haar cascade that OpenCV ships (no download). A :class:`FaceTrack` turns per-frame
detections into tracks, one per person (linked by motion and appearance), and gives the
chosen ones (:class:`FaceChoice`: the largest, the N-th from the left, the one most like a
reference picture, or all) as smooth square crop boxes per frame, carrying a box across
frames where the detector misses its face for a bounded time. :func:`paste_all` puts
several crops back without seams.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from copart.models.errors import CopartError, first_line

# face-alignment's detector weights: fetched and checked by copart's hub (its catalog entry "s3fd").
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
# Face tracking: detections are averaged over TRACK_WINDOW frames either side, and a box is
# carried for up to MAX_GAP_SECONDS where the detector misses the face.
TRACK_WINDOW = 8
MAX_GAP_SECONDS = 2.0
# The detector runs on this many frames a second (every 5th at 25 frames/s, every 6th at 30),
# and again on the next frame wherever it missed a face it was following or a new face is not
# yet confirmed; the smoothing fills the frames between. A frame it does not run on tells
# nothing: it is no miss (see FaceTrack).
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
        try:
            from face_alignment.detection.sfd.sfd_detector import SFDDetector
        except Exception as exc:  # noqa: BLE001 - a broken install is said, not raised
            raise DetectorUnavailable(f"face-alignment cannot be imported ({first_line(exc)})") from None
        from copart import hub  # the one place downloads happen: catalog checks, lock file, progress

        known = hub.entry("s3fd")
        try:
            cached = hub.pull(known)
        except hub.NotCached:
            raise DetectorUnavailable(f"{hub.offline_by()} and face-alignment's detector weights are not in "
                                      f"{known.directory} (put {known.file} from {known.url} there, or prepare the "
                                      f"machine with copart models pull s3fd)") from None
        except hub.FetchFailed as exc:
            raise DetectorUnavailable(f"face-alignment's detector weights could not be fetched into {known.directory} "
                                      f"({'; '.join(exc.reasons)}; copart models pull s3fd tries again)") from None
        except CopartError as exc:  # the cache folder cannot be written
            raise DetectorUnavailable(f"face-alignment's detector weights could not be fetched "
                                      f"({str(exc).rstrip('.')})") from None
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


# --- Several faces: which to process, and who is who from frame to frame -----------------

# A track becomes a face after this many detections (a one-off false detection never does);
# a tentative track is forgotten when it is not confirmed within TENTATIVE_FRAMES of its first
# detection or misses TENTATIVE_MISS frames in a row. These, the gate's growth and the gap a
# track is followed across count frames the detector ran on (every frame with detect_every=1):
# a frame it skipped is neither a hit nor a miss.
CONFIRM_HITS = 3
TENTATIVE_FRAMES = 24
TENTATIVE_MISS = 16
# Association cost: distance from the predicted centre (in face sizes) plus this weight times
# (1 - appearance similarity); the distance gate grows with the detector's runs since the track's
# last detection (its misses).
APPEARANCE_WEIGHT = 2.0
GATE = 0.75
GATE_PER_FRAME = 0.05
GATE_MAX = 2.0
PREDICT_FRAMES = 10  # constant-velocity prediction, at most this many frames ahead (or detect_every)
# A new face is an earlier one come back (exit and return, a crossing) when the appearance of
# its first detections is at least this similar to that face's.
REID_SIMILARITY = 0.6
# ``--face IMAGE`` follows a face only when its detections look on average at least this much
# like the face in the image: on the test clips the same person scores 0.59-0.89 (another
# picture of them, mirrored or rescaled and brightened), a different person 0.31-0.35.
REFERENCE_SIMILARITY = 0.47
APPEARANCE_DECAY = 0.97  # a face's appearance follows slow changes (pose, light) over ~30 detections


@dataclass(frozen=True)
class FaceChoice:
    """Which faces a video command processes (``--face``): ``largest`` (the largest face when
    faces first appear, then followed), ``index`` (the ``index``-th from the left, 1-based, in the
    first frame where that many faces are found), ``reference`` (the face that looks most like
    the face in the image ``reference``, if any looks like it) or ``all``. Only faces count (a
    detection seen CONFIRM_HITS times), never a tentative one; a face number or a reference
    that no face matches in the whole target is an error (:meth:`FaceTrack._check_choice`)."""

    mode: str = "largest"
    index: int = 0
    reference: Optional[Path] = None

    @property
    def several(self) -> bool:
        return self.mode == "all"

    def __str__(self) -> str:
        if self.mode == "index":
            return str(self.index)
        return str(self.reference) if self.mode == "reference" else self.mode


def parse_face(value, no_crop: bool = False) -> FaceChoice:
    """``--face``'s value: ``largest``, ``all``, a face number (1 = the leftmost) or the path of
    an image of the face to follow; anything else is one sentence. Anything but ``largest``
    (the default) needs face cropping (``no_crop`` False)."""
    choice = value if isinstance(value, FaceChoice) else _parse_face(value)
    if no_crop and choice.mode != "largest":
        raise CopartError(f"--face {choice} chooses among the faces copart finds, and --no-crop finds none; "
                          f"drop one of the two.")
    return choice


def _parse_face(value) -> FaceChoice:
    text = str(value).strip()
    if text.lower() in ("largest", "all"):
        return FaceChoice(text.lower())
    if re.fullmatch(r"[+-]?\d+", text):
        if int(text) < 1:
            raise CopartError(f"--face {text} is not a face number: faces are numbered from 1, the leftmost.")
        return FaceChoice("index", int(text))
    path = Path(text).expanduser()
    if path.is_file():
        return FaceChoice("reference", reference=path)
    what = "a folder" if path.is_dir() else "no such file"
    raise CopartError(f"--face takes largest, all, a face number (1 = the leftmost) or a reference image of the "
                      f"face to follow; '{text}' is none of these ({what}).")


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


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (float(np.linalg.norm(v)) + 1e-9)


def _centre(face) -> tuple[float, float, float]:
    x0, y0, x1, y1 = face[:4]
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0, 1.0)


class _Track:
    """One person: where the face was last seen, how it moves, what it looks like."""

    def __init__(self, key: int, t: int, run: int, face, descriptor: Optional[np.ndarray]):
        self.key = key
        self.id: Optional[int] = None  # the number users see, given when it becomes a face
        self.first = self.last = t  # frames
        self.first_run = self.last_run = run  # the detector's runs (frames it ran on), counted
        self.regained = -(10**9)  # the run where it was found again after a long miss
        self.cx, self.cy, self.size = _centre(face)
        self.vx = self.vy = 0.0
        self.hits = 1
        self.confirmed = False
        self.appearance = None if descriptor is None else descriptor.copy()
        self.reference = 0.0  # summed similarity to a reference face, and how many detections
        self.scored = 0

    def predict(self, t: int, horizon: int = PREDICT_FRAMES) -> tuple[float, float]:
        dt = min(t - self.last, horizon)
        return self.cx + self.vx * dt, self.cy + self.vy * dt

    def similarity(self, descriptor: Optional[np.ndarray]) -> Optional[float]:
        if self.appearance is None or descriptor is None:
            return None
        return float(_unit(self.appearance) @ descriptor)

    def update(self, t: int, run: int, face, descriptor: Optional[np.ndarray]) -> None:
        cx, cy, size = _centre(face)
        dt = max(1, t - self.last)
        rate = 0.5 if self.hits == 1 else 0.3
        limit = 0.25 * self.size
        self.vx = float(np.clip(self.vx + rate * ((cx - self.cx) / dt - self.vx), -limit, limit))
        self.vy = float(np.clip(self.vy + rate * ((cy - self.cy) / dt - self.vy), -limit, limit))
        self.cx, self.cy = cx, cy
        self.size += 0.3 * (size - self.size)
        self.last, self.last_run = t, run
        self.hits += 1
        if descriptor is not None:
            self.appearance = descriptor.copy() if self.appearance is None else \
                APPEARANCE_DECAY * self.appearance + descriptor


class _Smoother:
    """A track's crop box per frame: the Gaussian-weighted mean of its boxes within ``window``
    frames either side. A frame without a detection remembers the box it got (smoothed or
    carried) as if detected, so the track glides, rather than jumps, where the detector
    misses; with no detection within the window the box stays where it was, for up to
    ``max_gap`` misses (frames the detector ran on without finding the face), and then the track
    has no box until it is seen again. A frame the detector skipped is no miss."""

    def __init__(self, window: int, max_gap: int):
        self.window, self.max_gap = window, max_gap
        # (box, detected) of emitted frames: detected, or smoothed/carried (detected False)
        self.behind: deque = deque(maxlen=window)
        self.last: Optional[Box] = None
        self.since = 0  # misses since the last frame with a detection of its own (or since the start)
        self.hit = False  # a detection of its own in some emitted frame
        # Not missed for more than the window up to this frame (else carried or resuming); with
        # the detector run on every frame: a detection in the window up to this frame.
        self.seen_before = False
        self.seen_near = False  # that, or a detection in the window ahead
        self._near: list = []

    def step(self, box: Optional[Box], ahead: list, ran: bool = True) -> Optional[Box]:
        """This frame's box from its detection ``box`` (None: none, or ``ran`` False: the
        detector skipped the frame) and those of the frames ``ahead``."""
        near = [(-(len(self.behind) - i), b, d) for i, (b, d) in enumerate(self.behind)]
        near += [(0, box, box is not None)] + [(i + 1, b, b is not None) for i, b in enumerate(ahead)]
        self._near = near
        self.since = 0 if box is not None else self.since + (1 if ran else 0)
        self.hit = self.hit or box is not None
        self.seen_before = self.hit and self.since <= self.window
        self.seen_near = self.seen_before or any(b is not None for b in ahead)
        smoothed = self._mean(near, detected_only=False)
        if smoothed is None or (not self.seen_near and self.since > self.max_gap):
            self.behind.append((None, False))
            return None
        self.last = smoothed
        self.behind.append((box, True) if box is not None else (self.last, False))
        return self.last

    def resume(self) -> Box:
        """This frame's box from the track's detections alone, not the boxes carried before them
        (where a face comes back from behind another, from where it hid to where it is)."""
        self.last = self._mean(self._near, detected_only=True)
        self.behind[-1] = (self.last, False)
        return self.last

    def _mean(self, near: list, detected_only: bool) -> Optional[Box]:
        sigma = max(1.0, self.window / 2)
        weights, values = [], []
        for offset, b, detected in near:
            if b is not None and (detected or not detected_only):
                weights.append(math.exp(-(offset**2) / (2 * sigma**2)))
                values.append((b.cx, b.cy, b.side))
        if not values:
            return None
        w = np.asarray(weights)[:, None]
        cx, cy, side = (np.asarray(values) * w).sum(0) / w.sum()
        return Box(float(cx), float(cy), float(side))


@dataclass
class FaceSummary:
    """What a run found: ``found`` faces (after telling returning ones from new ones) and, per
    face number, the frames in which it was processed."""

    found: int
    followed: dict

    def describe(self) -> str:
        """``2 faces found, followed: face 1 in 118 frames, face 2 in 120 frames``."""
        text = f"{self.found} face{'s' if self.found != 1 else ''} found"
        if self.followed:
            text += ", followed: " + ", ".join(f"face {i} in {n} frame{'s' if n != 1 else ''}"
                                                for i, n in sorted(self.followed.items()))
        else:
            text += ", none followed"
        return text


class FaceTrack:
    """Per-frame crop boxes of the chosen faces, from per-frame detections.

    Detections are linked into tracks (one per person) frame by frame: by distance from a
    constant-velocity prediction and by appearance (:func:`describe`), so that a track stays
    on its person where faces cross, and a face that leaves and comes back gets its old track
    again (a new track whose first detections look like a face no longer seen is that face).
    Each track's box is smoothed over time as :class:`_Smoother` says (a look-ahead of
    ``window`` frames is buffered, so memory stays bounded). ``choice`` says which tracks
    :meth:`track` gives: one box per frame, or for ``all`` a ``{face number: box}`` dict.

    The detector runs on every ``detect_every``-th frame, and on the next frame after one where
    it missed a face still followed (within ``max_gap`` misses) or found a face not yet
    confirmed (so a face is confirmed, or a false detection dropped, as soon as with
    ``detect_every=1``). A frame it skips tells nothing: no miss for confirmation, forgetting,
    the gap, the gate or the occlusion rules, which count the frames it ran on; the smoothing
    gives such a frame a box from the detections around it.
    """

    def __init__(self, detector, margin: float = 0.3, window: int = 8, max_gap: int = 60,
                 choice: FaceChoice = FaceChoice(), reference: Optional[np.ndarray] = None,
                 detect_every: int = 1):
        self.detector = detector
        self.window = max(0, int(window))
        # The frames the detector skips are held back until its next run (the look-back), so
        # that where the faces change it can look at every one of them (_backfill): the frames
        # held are the smoothing's look-ahead or the skipped frames, whichever is more (11 at 60
        # frames a second, where it runs on every 12th).
        self.detect_every = max(1, int(detect_every))
        self._hold = max(self.window, self.detect_every - 1)
        self.detector_calls = 0  # frames the detector ran on
        self._countdown = 0  # frames until the detector runs again
        self.margin = margin
        self.max_gap = int(max_gap)
        self.choice = parse_face(choice)
        if self.choice.mode == "reference" and reference is None:
            raise ValueError("a reference face's descriptor is needed")
        self.reference = reference
        self.whole_frame: Optional[bool] = None
        self.detections = 0  # frames with at least one detection
        self._t = -1
        self._run = 0  # the detector's runs so far (the clock misses are counted on)
        self._ahead: deque = deque()  # [item, shape, {track key: box}, detector ran], not yet emitted
        self._tracks: dict[int, _Track] = {}
        self._smoothers: dict[int, _Smoother] = {}
        self._keys = 0
        self._ids = 0
        self._selected: Optional[int] = None
        self._latest: dict = {}  # the last run's detections by track key
        self._most = 0  # the most confirmed faces found by one run of the detector
        self._emitted: dict[int, int] = {}  # track key -> frames given out with a box

    # Detection side ------------------------------------------------------------------
    def track(self, frames: Iterable, image_of=lambda f: f.image) -> Iterator[tuple[object, object]]:
        """Yield ``(frame, region)`` for every frame, in order: region a :class:`Box` or None,
        or for ``all`` a ``{face number: Box}`` dict or None."""
        for frame in frames:
            image = image_of(frame)
            self._t += 1
            entry = [frame, image.shape, {}, False]  # as in _ahead
            if self._countdown <= 0:
                found = self.detector.detect(image)
                self.detector_calls += 1
                if self._ahead and not self._ahead[-1][3] and self._changes(self._t, found, image):
                    self._backfill(image_of)
                self._observe(entry, self._t, image, found)
                self._countdown = 1 if self._look_again() else self.detect_every
            self._countdown -= 1
            self._ahead.append(entry)
            if len(self._ahead) > self._hold:
                yield self._emit()
        # At the end, a track seen every time the detector ran since it appeared counts as a
        # face however short (a still image has one frame).
        latest = dict(self._latest)
        for tr in list(self._tracks.values()):
            if not tr.confirmed and tr.hits == self._run - tr.first_run + 1:
                kept = self._confirm(tr)
                if tr.key in latest:
                    latest[kept] = latest.pop(tr.key)
        self._choose(latest)
        self._check_choice()
        while self._ahead:
            yield self._emit()

    def _observe(self, entry: list, t: int, image: np.ndarray, found: list) -> None:
        """Frame ``t``'s detections ``found`` (the detector ran on it) into the tracks and its
        ``_ahead`` entry."""
        self._run += 1
        if found:
            self.detections += 1
            if self.whole_frame is None:
                self.whole_frame = _is_face_crop(face_to_box(max(found, key=_area), self.margin), image.shape)
        faces = self._associate(t, found, image) if found and not self.whole_frame else {}
        self._latest = faces
        self._choose(faces)
        entry[2], entry[3] = {k: face_to_box(f, self.margin) for k, f in faces.items()}, True

    def _changes(self, t: int, found: list, image: np.ndarray) -> bool:
        """Whether frame ``t``'s detections, after frames the detector skipped, change the faces
        in view: a face seen at the last run is not found, or a face is found that no track
        seen lately expects."""
        if self.whole_frame:
            return False
        expected = {tr.key for tr in self._tracks.values() if tr.confirmed and tr.last_run == self._run}
        if not found or self.whole_frame is None:
            return bool(found) or bool(expected)
        matched = self._match(t, self._run + 1, [(face, describe(image, face)) for face in found])
        return len(matched) < len(found) or not expected <= set(matched.values())

    def _backfill(self, image_of) -> None:
        """Run the detector on the frames it skipped since its last run (those still waiting in
        ``_ahead``), latest first, back to one where the faces are as at that run; then take them
        in order. So a face appearing, leaving or lost is placed as exactly as when the detector
        runs on every frame (a face missed once costs one run more)."""
        n = len(self._ahead)
        first = n
        while first > 0 and not self._ahead[first - 1][3]:
            first -= 1
        looked = []
        for j in range(n - 1, first - 1, -1):
            entry, t = self._ahead[j], self._t - (n - j)
            image = image_of(entry[0])
            found = self.detector.detect(image)
            self.detector_calls += 1
            looked.append((entry, t, image, found))
            if not self._changes(t, found, image):
                break
        for entry, t, image, found in reversed(looked):
            self._observe(entry, t, image, found)

    def _look_again(self) -> bool:
        """Whether the detector should run on the next frame, not ``detect_every`` frames on:
        it has just missed a face still followed (its box still carried), found one again after more than ``window``
        misses (for the next ``window`` runs, so its box moves to it as fast as when the
        detector runs on every frame), or found a new face not yet confirmed (nor about to be
        forgotten)."""
        run = self._run
        for tr in self._tracks.values():
            if tr.confirmed:
                if tr.last_run != run and run - tr.last_run <= max(self.max_gap, self.window):  # box carried
                    return True
                if run - tr.regained < self.window:
                    return True
            elif run - tr.first_run < TENTATIVE_FRAMES and run - tr.last_run < TENTATIVE_MISS:
                return True
        return False

    def _match(self, t: int, run: int, detections: list) -> dict:
        """Detection index -> track key, for the detections of run ``run`` (frame ``t``)."""
        live = [tr for tr in self._tracks.values() if run - tr.last_run <= self.max_gap]
        horizon = max(PREDICT_FRAMES, self.detect_every)
        pairs = []
        for i, (face, descriptor) in enumerate(detections):
            cx, cy, size = _centre(face)
            for tr in live:
                px, py = tr.predict(t, horizon)
                distance = math.hypot(cx - px, cy - py) / tr.size
                if distance > min(GATE_MAX, GATE + GATE_PER_FRAME * (run - tr.last_run)):
                    continue
                if not 0.6 <= size / tr.size <= 1.6:
                    continue
                similarity = tr.similarity(descriptor)
                cost = distance + APPEARANCE_WEIGHT * (1 - (0.5 if similarity is None else similarity))
                pairs.append((cost, i, tr.key))
        pairs.sort()
        matched: dict[int, int] = {}
        for _, i, key in pairs:
            if i not in matched and key not in matched.values():
                matched[i] = key
        return matched

    def _associate(self, t: int, found: list, image: np.ndarray) -> dict:
        """This frame's detections by track key (new tracks for faces not seen before)."""
        run = self._run
        detections = [(face, describe(image, face)) for face in found]
        matched = self._match(t, run, detections)
        faces = {}
        # New tracks are made left to right, so faces that appear together are numbered so.
        for i in sorted(range(len(detections)), key=lambda i: _centre(detections[i][0])[0]):
            face, descriptor = detections[i]
            if i in matched:
                tr = self._tracks[matched[i]]
                if run - tr.last_run > self.window + 1:  # found again after more than window misses
                    tr.regained = run
                tr.update(t, run, face, descriptor)
            else:
                self._keys += 1
                tr = self._tracks[self._keys] = _Track(self._keys, t, run, face, descriptor)
                self._smoothers[tr.key] = _Smoother(self.window, self.max_gap)
            if self.reference is not None and descriptor is not None:
                tr.reference += float(self.reference @ descriptor)
                tr.scored += 1
            faces[tr.key] = face
        for key in list(faces):
            tr = self._tracks[key]
            if not tr.confirmed and tr.hits >= CONFIRM_HITS:
                kept = self._confirm(tr)
                faces[kept] = faces.pop(key)
        for tr in list(self._tracks.values()):
            if not tr.confirmed and (run - tr.first_run >= TENTATIVE_FRAMES or run - tr.last_run >= TENTATIVE_MISS):
                self._forget(tr.key)
        return faces

    def _confirm(self, tr: _Track) -> int:
        """``tr`` becomes a face: an earlier face come back when it looks like one that has not
        been seen since ``tr`` appeared (it is then merged into it), else a new face. Returns
        the key of the track it now is."""
        tr.confirmed = True
        gone = [o for o in self._tracks.values() if o.confirmed and o is not tr and o.last < tr.first
                and o.appearance is not None]
        if tr.appearance is not None and gone:
            best = max(gone, key=lambda o: o.similarity(_unit(tr.appearance)))
            if best.similarity(_unit(tr.appearance)) >= REID_SIMILARITY:
                self._merge(tr, best)
                return best.key
        return tr.key  # its number comes when frames are given out (faces that appear together: left to right)

    def _merge(self, new: _Track, old: _Track) -> None:
        """``new`` is ``old`` come back: ``old`` takes its detections, motion and smoothing."""
        old.cx, old.cy, old.size, old.vx, old.vy = new.cx, new.cy, new.size, new.vx, new.vy
        old.last, old.last_run = new.last, new.last_run
        old.hits += new.hits
        old.appearance = old.appearance + new.appearance
        old.reference += new.reference
        old.scored += new.scored
        for _, _, boxes, _ in self._ahead:
            if new.key in boxes:
                boxes[old.key] = boxes.pop(new.key)
        self._smoothers[old.key] = self._smoothers.pop(new.key)
        self._emitted[old.key] = self._emitted.get(old.key, 0) + self._emitted.pop(new.key, 0)
        if self._selected == new.key:
            self._selected = old.key
        del self._tracks[new.key]

    def _forget(self, key: int) -> None:
        """A tentative track that never became a face (a false detection, most often)."""
        del self._tracks[key]
        self._smoothers.pop(key, None)
        for _, _, boxes, _ in self._ahead:
            boxes.pop(key, None)
        if self._selected == key:
            self._selected = None

    def _choose(self, faces: dict) -> None:
        """``largest`` and ``N`` pick their track among the faces of this run that are confirmed
        (a tentative track, a one-off false detection most often, is never picked), the first
        time there are any (for ``N``: at least N). A face confirmed within the look-ahead of
        its first detection gets its box from that first frame on (the frames not yet given out
        are smoothed with its detections); frames given out before are passed through."""
        confirmed = {k: f for k, f in faces.items() if k in self._tracks and self._tracks[k].confirmed}
        self._most = max(self._most, len(confirmed))
        if self._selected is not None or not confirmed or self.choice.mode not in ("largest", "index"):
            return
        if self.choice.mode == "largest":
            self._selected = max(confirmed, key=lambda k: _area(confirmed[k]))
        elif len(confirmed) >= self.choice.index:
            self._selected = sorted(confirmed, key=lambda k: _centre(confirmed[k])[0])[self.choice.index - 1]

    def _check_choice(self) -> None:
        """At the end: a face number that no frame showed, or a reference face that no face
        looked like, is an error (raised before the last frames are given out, so a command
        writes nothing)."""
        if self.choice.mode == "reference" and not self.whole_frame and self._reference_pick() is None \
                and not any(self._emitted.values()):
            scores = [tr.reference / tr.scored for tr in self._tracks.values() if tr.confirmed and tr.scored]
            closest = f"the closest scores {max(scores):.2f}" if scores else "no face was found"
            raise CopartError(f"No face in these frames looks like the face in {self.choice.reference} "
                              f"({closest}; the same person scores {REFERENCE_SIMILARITY} or more); "
                              f"nothing was written.")
        if self.choice.mode != "index":
            return
        most = (1 if self.detections else 0) if self.whole_frame else self._most
        if (self.whole_frame and self.choice.index > most) or (not self.whole_frame and self._selected is None):
            n = self.choice.index
            seen = "no face" if not most else f"{most} face{'s' if most != 1 else ''}" if self._t == 0 else \
                f"at most {most} at once"
            where = f"where {n} faces are seen at once" if n > 1 else "where a face is seen"
            raise CopartError(f"There is no face {n} to follow: --face {n} is the {_ordinal(n)} face from the left "
                              f"{where}, and copart found {seen}; nothing was written.")

    # Emission side -------------------------------------------------------------------
    def _emit(self):
        frame, shape, raw, ran = self._ahead.popleft()  # see track
        if self.whole_frame:
            box = Box(shape[1] / 2, shape[0] / 2, min(shape[:2])) if _square(shape) else None
            if box is not None:
                self._emitted[0] = self._emitted.get(0, 0) + 1
            return frame, ({1: box} if box is not None else None) if self.choice.several else box
        boxes = {}
        for key, smoother in self._smoothers.items():
            box = smoother.step(raw.get(key), [b.get(key) for _, _, b, _ in islice(self._ahead, self.window)], ran)
            if box is not None:
                boxes[key] = box
        self._occlusions(boxes)
        for key in sorted(k for k, tr in self._tracks.items() if tr.confirmed and tr.id is None):
            self._ids += 1
            self._tracks[key].id = self._ids
        if self.choice.mode == "all":
            chosen = {k: b for k, b in boxes.items() if self._tracks[k].confirmed}
        else:
            key = self._reference_pick() if self.choice.mode == "reference" else self._selected
            chosen = {key: boxes[key]} if key in boxes else {}
        for key in chosen:
            self._emitted[key] = self._emitted.get(key, 0) + 1
            if self._tracks[key].id is None:  # processed before it was confirmed
                self._ids += 1
                self._tracks[key].id = self._ids
        if self.choice.several:
            return frame, {self._tracks[k].id: b for k, b in sorted(chosen.items(), key=lambda kb: self._tracks[kb[0]].id)} or None
        return frame, next(iter(chosen.values()), None)

    def _occlusions(self, boxes: dict) -> None:
        """A box carried where its face has not been seen for a while, over a face that is
        seen, is a face hidden behind another (a crossing): it is left out rather than pasted
        over the one in front; and where the hidden face is about to be seen again, its box
        comes from those detections alone, not from where it hid."""
        seen = {k: b for k, b in boxes.items() if self._smoothers[k].seen_near and self._tracks[k].confirmed}
        for key in list(boxes):
            smoother = self._smoothers[key]
            if smoother.seen_before:
                continue
            if any(_overlap(boxes[key], b) > 0.3 for k, b in seen.items() if k != key):
                if smoother.seen_near:
                    boxes[key] = smoother.resume()
                else:
                    del boxes[key]

    def _reference_pick(self) -> Optional[int]:
        """The confirmed track that looks most like the reference face so far (a short track's
        mean is shrunk towards 0, so a few lucky detections do not win), among those that look
        like it at all (their mean similarity at least REFERENCE_SIMILARITY): another person,
        alone in view, is not taken for the one in the picture."""
        scored = [tr for tr in self._tracks.values()
                  if tr.confirmed and tr.scored and tr.reference / tr.scored >= REFERENCE_SIMILARITY]
        if not scored:
            return None
        return max(scored, key=lambda tr: tr.reference / (tr.scored + 2)).key

    def summary(self) -> FaceSummary:
        """Faces found and frames processed per face number."""
        if self.whole_frame:
            return FaceSummary(1 if self.detections else 0, {1: self._emitted.get(0, 0)} if self._emitted else {})
        for key in sorted(k for k, tr in self._tracks.items() if tr.confirmed and tr.id is None):
            self._ids += 1
            self._tracks[key].id = self._ids
        found = sum(1 for tr in self._tracks.values() if tr.id is not None)
        followed = {self._tracks[k].id: n for k, n in self._emitted.items() if k in self._tracks and n}
        return FaceSummary(found, followed)


def _overlap(a: Box, b: Box) -> float:
    """The part of the smaller of two squares that the other covers."""
    ax0, ay0, ax1, ay1 = a.bounds()
    bx0, by0, bx1, by1 = b.bounds()
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    return inter / max(1, min((ax1 - ax0) ** 2, (bx1 - bx0) ** 2))


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _area(face) -> float:
    return (face[2] - face[0]) * (face[3] - face[1])


def reference_face(detector, path: Path) -> np.ndarray:
    """The appearance of the (largest) face in the image at ``path``, for ``--face PATH``."""
    from .read import read_image

    image = read_image(path, "Reference image")
    face = best_face(detector.detect(image))
    descriptor = describe(image, face) if face is not None else None
    if descriptor is None:
        raise CopartError(f"No face found in reference image {path}; give --face a picture in which the face to "
                          f"follow is seen from the front.")
    return descriptor

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


_CONE_CACHE: dict = {}


def centre_weight(side: int) -> np.ndarray:
    """``(side, side, 1)`` float32: 1 at the centre of a crop, falling linearly to 0 at its edge
    (Chebyshev distance), never quite 0 inside."""
    if side not in _CONE_CACHE:
        r = np.abs(np.arange(side) + 0.5 - side / 2) / (side / 2)
        if len(_CONE_CACHE) > 64:
            _CONE_CACHE.clear()
        _CONE_CACHE[side] = np.maximum(1e-3, 1 - np.maximum(r[:, None], r[None, :]))[..., None].astype(np.float32)
    return _CONE_CACHE[side]


def paste_all(image: np.ndarray, patches: list, boxes: list, feather: float = 0.08) -> np.ndarray:
    """Paste several patches back in one pass, without seams where their boxes overlap.

    Where one box covers a pixel the result is :func:`paste`'s. Where several do, the pixel
    takes a mean of their patches weighted by each one's feather mask times its closeness to
    that crop's centre (so each face comes mostly from its own crop), then blends with the
    frame by the largest feather mask: both weights change smoothly, so no edge of one crop
    shows inside another. Pixels outside every box are untouched."""
    if len(patches) == 1:
        return paste(image, patches[0], boxes[0], feather)
    h, w = image.shape[:2]
    placed = []
    for patch, box in zip(patches, boxes):
        x0, y0, x1, y1 = box.bounds()
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if cx1 > cx0 and cy1 > cy0:
            placed.append((patch, (x0, y0, x1, y1), (cx0, cy0, cx1, cy1)))
    if not placed:
        return image
    ux0, uy0 = min(p[2][0] for p in placed), min(p[2][1] for p in placed)
    ux1, uy1 = max(p[2][2] for p in placed), max(p[2][3] for p in placed)
    total = np.zeros((uy1 - uy0, ux1 - ux0, 3), np.float32)
    weight = np.zeros((uy1 - uy0, ux1 - ux0, 1), np.float32)
    alpha = np.zeros_like(weight)
    for patch, (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) in placed:
        side = x1 - x0
        interpolation = cv2.INTER_AREA if patch.shape[0] > side else cv2.INTER_LINEAR
        patch = cv2.resize(patch, (side, side), interpolation=interpolation)
        inside = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        m = feather_mask(side, max(2, int(round(feather * side))))[inside]
        wm = m * centre_weight(side)[inside]
        at = (slice(cy0 - uy0, cy1 - uy0), slice(cx0 - ux0, cx1 - ux0))
        total[at] += wm * patch[inside].astype(np.float32)
        weight[at] += wm
        np.maximum(alpha[at], m, out=alpha[at])
    out = image.copy()
    region = out[uy0:uy1, ux0:ux1].astype(np.float32)
    blend = np.where(weight > 0, total / np.maximum(weight, 1e-12), region)
    out[uy0:uy1, ux0:ux1] = np.clip(region + alpha * (blend - region) + 0.5, 0, 255).astype(np.uint8)
    return out


def make_track(kind: str, device: str, margin: float, fps, notices: list, face="largest") -> "FaceTrack":
    """The face track the video commands use: ``kind``'s detector, copart's smoothing and gap,
    and ``face`` (a :class:`FaceChoice` or ``--face``'s text) for which faces it gives."""
    choice = parse_face(face)
    detector = make_detector(kind, device, notices)
    reference = reference_face(detector, choice.reference) if choice.mode == "reference" else None
    fps = float(fps or 25)
    return FaceTrack(detector, margin, TRACK_WINDOW, round(MAX_GAP_SECONDS * fps), choice, reference,
                     detect_every_for(fps))


def detect_every_for(fps) -> int:
    """Every how many frames the detector runs at ``fps`` frames a second (DETECTIONS_PER_SECOND
    times a second: every 5th frame at 25, 6th at 30, 12th at 60; every frame at 5 or fewer).
    :class:`FaceTrack` holds back the frames it skips until its next run."""
    return max(1, round(float(fps or 25) / DETECTIONS_PER_SECOND))

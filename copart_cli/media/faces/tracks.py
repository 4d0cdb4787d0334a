"""Linking detections into tracks, one per person: by motion and by appearance.

The records: :class:`Track` (one person) and :class:`Pending` (a frame waiting to be given
out); :class:`Linker` holds the tracks and links each run's detections into them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .box import Box, centre
from .descriptor import describe, unit
from .smoothing import Smoother

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
APPEARANCE_DECAY = 0.97  # a face's appearance follows slow changes (pose, light) over ~30 detections


@dataclass
class Pending:
    """A frame not yet given out: its ``boxes`` by track key, found where ``ran`` (the detector
    ran on it; a frame it skipped has none and tells nothing)."""

    frame: object
    shape: tuple
    boxes: dict[int, Box] = field(default_factory=dict)
    ran: bool = False


@dataclass(eq=False)
class Track:
    """One person: where the face was last seen, how it moves, what it looks like."""

    key: int
    first: int  # frames
    last: int
    first_run: int  # the detector's runs (frames it ran on), counted
    last_run: int
    cx: float
    cy: float
    size: float
    appearance: Optional[np.ndarray]  # summed, decaying descriptors
    id: Optional[int] = None  # the number users see, given when it becomes a face
    regained: int = -(10**9)  # the run where it was found again after a long miss
    vx: float = 0.0
    vy: float = 0.0
    hits: int = 1
    confirmed: bool = False
    reference: float = 0.0  # summed similarity to a reference face, and how many detections
    scored: int = 0

    @classmethod
    def start(cls, key: int, t: int, run: int, face, descriptor: Optional[np.ndarray]) -> Track:
        cx, cy, size = centre(face)
        return cls(key, t, t, run, run, cx, cy, size, None if descriptor is None else descriptor.copy())

    def predict(self, t: int, horizon: int = PREDICT_FRAMES) -> tuple[float, float]:
        dt = min(t - self.last, horizon)
        return self.cx + self.vx * dt, self.cy + self.vy * dt

    def similarity(self, descriptor: Optional[np.ndarray]) -> Optional[float]:
        if self.appearance is None or descriptor is None:
            return None
        return float(unit(self.appearance) @ descriptor)

    def update(self, t: int, run: int, face, descriptor: Optional[np.ndarray]) -> None:
        cx, cy, size = centre(face)
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


class Linker:
    """The tracks (by key), their smoothing, and the frames not yet given out (``_ahead``),
    with the linking of each run's detections into them."""

    def __init__(self, window: int, max_gap: int, detect_every: int, reference: Optional[np.ndarray]):
        self.window, self.max_gap, self.detect_every, self.reference = window, max_gap, detect_every, reference
        self.whole_frame: Optional[bool] = None
        self._run = 0  # the detector's runs so far (the clock misses are counted on)
        self._ahead: deque[Pending] = deque()
        self._tracks: dict[int, Track] = {}
        self._smoothers: dict[int, Smoother] = {}
        self._keys = 0
        self._ids = 0
        self._selected: Optional[int] = None
        self._emitted: dict[int, int] = {}  # track key -> frames given out with a box

    def _number(self, keys: Iterable[int]) -> None:
        """Give the tracks ``keys`` that have no face number yet the next ones, in that order."""
        for key in keys:
            if self._tracks[key].id is None:
                self._ids += 1
                self._tracks[key].id = self._ids

    def _number_faces(self) -> None:
        """Number the faces not yet numbered: those that became faces together, left to right."""
        self._number(sorted(k for k, tr in self._tracks.items() if tr.confirmed))

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

    def _match(self, t: int, run: int, detections: list) -> dict:
        """Detection index -> track key, for the detections of run ``run`` (frame ``t``)."""
        live = [tr for tr in self._tracks.values() if run - tr.last_run <= self.max_gap]
        horizon = max(PREDICT_FRAMES, self.detect_every)
        pairs = []
        for i, (face, descriptor) in enumerate(detections):
            cx, cy, size = centre(face)
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
        for i in sorted(range(len(detections)), key=lambda i: centre(detections[i][0])[0]):
            face, descriptor = detections[i]
            if i in matched:
                tr = self._tracks[matched[i]]
                if run - tr.last_run > self.window + 1:  # found again after more than window misses
                    tr.regained = run
                tr.update(t, run, face, descriptor)
            else:
                self._keys += 1
                tr = self._tracks[self._keys] = Track.start(self._keys, t, run, face, descriptor)
                self._smoothers[tr.key] = Smoother(self.window, self.max_gap)
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

    def _confirm(self, tr: Track) -> int:
        """``tr`` becomes a face: an earlier face come back when it looks like one that has not
        been seen since ``tr`` appeared (it is then merged into it), else a new face. Returns
        the key of the track it now is."""
        tr.confirmed = True
        gone = [o for o in self._tracks.values() if o.confirmed and o is not tr and o.last < tr.first
                and o.appearance is not None]
        if tr.appearance is not None and gone:
            best = max(gone, key=lambda o: o.similarity(unit(tr.appearance)))
            if best.similarity(unit(tr.appearance)) >= REID_SIMILARITY:
                self._merge(tr, best)
                return best.key
        return tr.key  # its number comes when frames are given out (faces that appear together: left to right)

    def _merge(self, new: Track, old: Track) -> None:
        """``new`` is ``old`` come back: ``old`` takes its detections, motion and smoothing."""
        old.cx, old.cy, old.size, old.vx, old.vy = new.cx, new.cy, new.size, new.vx, new.vy
        old.last, old.last_run = new.last, new.last_run
        old.hits += new.hits
        old.appearance = old.appearance + new.appearance
        old.reference += new.reference
        old.scored += new.scored
        for pending in self._ahead:
            if new.key in pending.boxes:
                pending.boxes[old.key] = pending.boxes.pop(new.key)
        self._smoothers[old.key] = self._smoothers.pop(new.key)
        self._emitted[old.key] = self._emitted.get(old.key, 0) + self._emitted.pop(new.key, 0)
        if self._selected == new.key:
            self._selected = old.key
        del self._tracks[new.key]

    def _forget(self, key: int) -> None:
        """A tentative track that never became a face (a false detection, most often)."""
        del self._tracks[key]
        self._smoothers.pop(key, None)
        for pending in self._ahead:
            pending.boxes.pop(key, None)
        if self._selected == key:
            self._selected = None

"""The face track: per-frame crop boxes of the chosen faces, from per-frame detections."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Optional

import numpy as np

from copart.models.errors import CopartError

from .box import Box, area, centre, face_to_box, is_face_crop, overlap, square
from .choice import FaceChoice, parse_face
from .tracks import TENTATIVE_FRAMES, TENTATIVE_MISS, Linker, Pending

# ``--face IMAGE`` follows a face only when its detections look on average at least this much
# like the face in the image: on the test clips the same person scores 0.59-0.89 (another
# picture of them, mirrored or rescaled and brightened), a different person 0.31-0.35.
REFERENCE_SIMILARITY = 0.47


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


class FaceTrack(Linker):
    """Per-frame crop boxes of the chosen faces, from per-frame detections.

    Detections are linked into tracks (one per person) frame by frame: by distance from a
    constant-velocity prediction and by appearance (:func:`describe`), so that a track stays
    on its person where faces cross, and a face that leaves and comes back gets its old track
    again (a new track whose first detections look like a face no longer seen is that face;
    see :class:`Linker`). Each track's box is smoothed over time as :class:`Smoother` says (a
    look-ahead of ``window`` frames is buffered, so memory stays bounded). ``choice`` says which
    tracks :meth:`track` gives: one box per frame, or for ``all`` a ``{face number: box}`` dict.

    The detector runs on every ``detect_every``-th frame, and on the next frame after one where
    it missed a face still followed (within ``max_gap`` misses) or found a face not yet
    confirmed (so a face is confirmed, or a false detection dropped, as soon as with
    ``detect_every=1``). A frame it skips tells nothing: no miss for confirmation, forgetting,
    the gap, the gate or the occlusion rules, which count the frames it ran on; the smoothing
    gives such a frame a box from the detections around it.
    """

    def __init__(self, detector, margin: float = 0.3, window: int = 8, max_gap: int = 60,
                 choice: FaceChoice = FaceChoice(), reference: Optional[np.ndarray] = None,  # noqa: B008
                 detect_every: int = 1):
        choice = parse_face(choice)
        if choice.mode == "reference" and reference is None:
            raise ValueError("a reference face's descriptor is needed")
        super().__init__(max(0, int(window)), int(max_gap), max(1, int(detect_every)), reference)
        self.detector = detector
        # The frames the detector skips are held back until its next run (the look-back), so
        # that where the faces change it can look at every one of them (_backfill): the frames
        # held are the smoothing's look-ahead or the skipped frames, whichever is more (11 at 60
        # frames a second, where it runs on every 12th).
        self._hold = max(self.window, self.detect_every - 1)
        self.detector_calls = 0  # frames the detector ran on
        self._countdown = 0  # frames until the detector runs again
        self.margin = margin
        self.choice = choice
        self.detections = 0  # frames with at least one detection
        self._t = -1
        self._latest: dict = {}  # the last run's detections by track key
        self._most = 0  # the most confirmed faces found by one run of the detector

    # Detection side ------------------------------------------------------------------
    def track(self, frames: Iterable, image_of=lambda f: f.image) -> Iterator[tuple[object, object]]:
        """Yield ``(frame, region)`` for every frame, in order: region a :class:`Box` or None,
        or for ``all`` a ``{face number: Box}`` dict or None."""
        for frame in frames:
            image = image_of(frame)
            self._t += 1
            pending = Pending(frame, image.shape)
            if self._countdown <= 0:
                found = self.detector.detect(image)
                self.detector_calls += 1
                if self._ahead and not self._ahead[-1].ran and self._changes(self._t, found, image):
                    self._backfill(image_of)
                self._observe(pending, self._t, image, found)
                self._countdown = 1 if self._look_again() else self.detect_every
            self._countdown -= 1
            self._ahead.append(pending)
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

    def _observe(self, pending: Pending, t: int, image: np.ndarray, found: list) -> None:
        """Frame ``t``'s detections ``found`` (the detector ran on it) into the tracks and its
        ``_ahead`` record."""
        self._run += 1
        if found:
            self.detections += 1
            if self.whole_frame is None:
                self.whole_frame = is_face_crop(face_to_box(max(found, key=area), self.margin), image.shape)
        faces = self._associate(t, found, image) if found and not self.whole_frame else {}
        self._latest = faces
        self._choose(faces)
        pending.boxes = {k: face_to_box(f, self.margin) for k, f in faces.items()}
        pending.ran = True

    def _backfill(self, image_of) -> None:
        """Run the detector on the frames it skipped since its last run (those still waiting in
        ``_ahead``), latest first, back to one where the faces are as at that run; then take them
        in order. So a face appearing, leaving or lost is placed as exactly as when the detector
        runs on every frame (a face missed once costs one run more)."""
        n = len(self._ahead)
        first = n
        while first > 0 and not self._ahead[first - 1].ran:
            first -= 1
        looked = []
        for j in range(n - 1, first - 1, -1):
            pending, t = self._ahead[j], self._t - (n - j)
            image = image_of(pending.frame)
            found = self.detector.detect(image)
            self.detector_calls += 1
            looked.append((pending, t, image, found))
            if not self._changes(t, found, image):
                break
        for pending, t, image, found in reversed(looked):
            self._observe(pending, t, image, found)

    def _look_again(self) -> bool:
        """Whether the detector should run on the next frame, not ``detect_every`` frames on:
        it has just missed a face still followed (its box still carried), found one again after
        more than ``window`` misses (for the next ``window`` runs, so its box moves to it as fast
        as when the detector runs on every frame), or found a new face not yet confirmed (nor
        about to be forgotten)."""
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
            self._selected = max(confirmed, key=lambda k: area(confirmed[k]))
        elif len(confirmed) >= self.choice.index:
            self._selected = sorted(confirmed, key=lambda k: centre(confirmed[k])[0])[self.choice.index - 1]

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
        pending = self._ahead.popleft()  # see track
        if self.whole_frame:
            shape = pending.shape
            box = Box(shape[1] / 2, shape[0] / 2, min(shape[:2])) if square(shape) else None
            if box is not None:
                self._emitted[0] = self._emitted.get(0, 0) + 1
            return pending.frame, ({1: box} if box is not None else None) if self.choice.several else box
        boxes = {}
        ahead = list(islice(self._ahead, self.window))
        for key, smoother in self._smoothers.items():
            box = smoother.step(pending.boxes.get(key), [p.boxes.get(key) for p in ahead], pending.ran)
            if box is not None:
                boxes[key] = box
        self._occlusions(boxes)
        self._number_faces()
        if self.choice.mode == "all":
            chosen = {k: b for k, b in boxes.items() if self._tracks[k].confirmed}
        else:
            key = self._reference_pick() if self.choice.mode == "reference" else self._selected
            chosen = {key: boxes[key]} if key in boxes else {}
        for key in chosen:
            self._emitted[key] = self._emitted.get(key, 0) + 1
        self._number(chosen)  # one processed before it was confirmed gets its number now
        if self.choice.several:
            numbered = sorted(chosen.items(), key=lambda kb: self._tracks[kb[0]].id)
            return pending.frame, {self._tracks[k].id: b for k, b in numbered} or None
        return pending.frame, next(iter(chosen.values()), None)

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
            if any(overlap(boxes[key], b) > 0.3 for k, b in seen.items() if k != key):
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
        self._number_faces()
        found = sum(1 for tr in self._tracks.values() if tr.id is not None)
        followed = {self._tracks[k].id: n for k, n in self._emitted.items() if k in self._tracks and n}
        return FaceSummary(found, followed)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"

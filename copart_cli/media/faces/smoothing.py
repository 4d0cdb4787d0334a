"""One track's crop box per frame, smoothed over time and carried where the detector misses."""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple, Optional

import numpy as np

from .box import Box


class Seen(NamedTuple):
    """A frame's box as the smoothing remembers it: ``detected`` there, or smoothed/carried."""

    box: Optional[Box]
    detected: bool


class Near(NamedTuple):
    """A box within the window around the frame being smoothed, ``offset`` frames from it."""

    offset: int
    box: Optional[Box]
    detected: bool


class Smoother:
    """A track's crop box per frame: the Gaussian-weighted mean of its boxes within ``window``
    frames either side. A frame without a detection remembers the box it got (smoothed or
    carried) as if detected, so the track glides, rather than jumps, where the detector
    misses; with no detection within the window the box stays where it was, for up to
    ``max_gap`` misses (frames the detector ran on without finding the face), and then the track
    has no box until it is seen again. A frame the detector skipped is no miss."""

    def __init__(self, window: int, max_gap: int):
        self.window, self.max_gap = window, max_gap
        self.behind: deque[Seen] = deque(maxlen=window)  # the frames given out
        self.last: Optional[Box] = None
        self.since = 0  # misses since the last frame with a detection of its own (or since the start)
        self.hit = False  # a detection of its own in some emitted frame
        # Not missed for more than the window up to this frame (else carried or resuming); with
        # the detector run on every frame: a detection in the window up to this frame.
        self.seen_before = False
        self.seen_near = False  # that, or a detection in the window ahead
        self._near: list[Near] = []

    def step(self, box: Optional[Box], ahead: list, ran: bool = True) -> Optional[Box]:
        """This frame's box from its detection ``box`` (None: none, or ``ran`` False: the
        detector skipped the frame) and those of the frames ``ahead``."""
        near = [Near(-(len(self.behind) - i), s.box, s.detected) for i, s in enumerate(self.behind)]
        near += [Near(0, box, box is not None)] + [Near(i + 1, b, b is not None) for i, b in enumerate(ahead)]
        self._near = near
        self.since = 0 if box is not None else self.since + (1 if ran else 0)
        self.hit = self.hit or box is not None
        self.seen_before = self.hit and self.since <= self.window
        self.seen_near = self.seen_before or any(b is not None for b in ahead)
        smoothed = self._mean(near, detected_only=False)
        if smoothed is None or (not self.seen_near and self.since > self.max_gap):
            self.behind.append(Seen(None, False))
            return None
        self.last = smoothed
        self.behind.append(Seen(box, True) if box is not None else Seen(self.last, False))
        return self.last

    def resume(self) -> Box:
        """This frame's box from the track's detections alone, not the boxes carried before them
        (where a face comes back from behind another, from where it hid to where it is)."""
        self.last = self._mean(self._near, detected_only=True)
        self.behind[-1] = Seen(self.last, False)
        return self.last

    def _mean(self, near: list[Near], detected_only: bool) -> Optional[Box]:
        sigma = max(1.0, self.window / 2)
        weights, values = [], []
        for n in near:
            if n.box is not None and (n.detected or not detected_only):
                weights.append(math.exp(-(n.offset**2) / (2 * sigma**2)))
                values.append((n.box.cx, n.box.cy, n.box.side))
        if not values:
            return None
        w = np.asarray(weights)[:, None]
        cx, cy, side = (np.asarray(values) * w).sum(0) / w.sum()
        return Box(float(cx), float(cy), float(side))

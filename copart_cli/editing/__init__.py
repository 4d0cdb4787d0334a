"""The editing jobs behind ``copart swap`` and ``copart segment``: files in, files out,
a summary back. The commands and the demo call them alike."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def reused(reuse: Optional[dict], key: str, make: Callable[[], T]) -> T:
    """``make()``, or with a ``reuse`` dict (shared by the calls of one batch, all with the same
    source, model and options) what an earlier call made under ``key``. An error while making it
    carries ``shared = True``."""
    if reuse is None:
        return make()
    if key not in reuse:
        try:
            reuse[key] = make()
        except Exception as exc:
            exc.shared = True  # type: ignore[attr-defined]
            raise
    return reuse[key]


def face_track(reuse: Optional[dict], kind: str, device: str, margin: float, fps, notices: list, choice):
    """A new face track for one video (:func:`copart.media.faces.make_track`); with ``reuse``,
    its detector is the one the batch's first video made (an error making it carries
    ``shared = True``, as in :func:`reused`)."""
    from copart.media import faces

    if reuse is None:
        return faces.make_track(kind, device, margin, fps, notices, choice)
    if "detector" in reuse:
        return faces.make_track(reuse["detector"], device, margin, fps, notices, choice)
    try:
        track = faces.make_track(kind, device, margin, fps, notices, choice)
    except Exception as exc:
        exc.shared = True  # type: ignore[attr-defined]
        raise
    reuse["detector"] = track.detector
    return track

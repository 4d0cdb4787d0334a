"""Face detection costs about the same at any resolution (the cascade looks at a frame scaled
down to a fixed short side) and keeps its boxes: on Carphone scaled up to 720p, the track's box
of every frame is within 5 px (Carphone's pixels) of the box found on Carphone itself."""

import av
import cv2
import numpy as np
import pytest

from copart.media import faces
from copart.media.faces import FaceTrack, HaarDetector

UP = 5  # Carphone (176x144) scaled 5x to 880x720, its sides mirrored out to 1280x720
PAD = 200


def _frames(carphone):
    with av.open(str(carphone)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _hd(frame):
    big = cv2.resize(frame, (176 * UP, 144 * UP), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, 0, 0, PAD, PAD, cv2.BORDER_REFLECT)


def _track(frames, detector):
    # the command's track at 30 frames/s: the detector on every 6th frame (and again after a miss)
    track = FaceTrack(detector, 0.3, faces.TRACK_WINDOW, 60, detect_every=faces.detect_every_for(30))
    return [box for _, box in track.track(frames, image_of=lambda image: image)], track


class _Looking(HaarDetector):
    """The Haar detector, noting the size of every image the cascade is given."""

    def __init__(self):
        super().__init__()
        self.seen = set()
        real = self.cascade

        class Spy:
            def detectMultiScale(self, gray, **kwargs):  # OpenCV's name
                looking.seen.add(gray.shape)
                return real.detectMultiScale(gray, **kwargs)

        looking = self
        self.cascade = Spy()


def test_720p_boxes_within_5_px_of_detection_on_carphone_itself(carphone):
    small = _frames(carphone)
    native, _ = _track(small, HaarDetector())
    detector = _Looking()
    boxes, track = _track([_hd(f) for f in small], detector)
    assert len(boxes) == len(native) == 120
    assert [b is None for b in boxes] == [b is None for b in native]  # the same frames covered
    apart = [max(abs((b.cx - PAD) / UP - a.cx), abs(b.cy / UP - a.cy), abs(b.side / UP - a.side))
             for a, b in zip(native, boxes) if a is not None]
    assert max(apart) < 5, (max(apart), np.mean(apart))
    # the cascade looked at 462x260 images, an eighth of the 720p frame's pixels
    assert detector.seen == {(260, 462)}, detector.seen
    print("DETECT_DOWNSCALED: 720p boxes within", round(max(apart), 2), "px of Carphone's (mean",
          round(float(np.mean(apart)), 2), "),", track.detector_calls, "detector runs of 120")


@pytest.mark.parametrize("shape, looked", [((720, 1280), (260, 462)), ((1080, 1920), (260, 462)),
                                           ((1920, 1080), (462, 260)), ((144, 176), (144, 176))])
def test_the_cascade_looks_at_the_same_small_image_at_any_resolution(shape, looked):
    detector = _Looking()
    detector.detect(np.zeros((*shape, 3), np.uint8))
    assert detector.seen == {looked}
    # frames no larger than that are looked at as they are (Carphone's boxes unchanged)
    assert HaarDetector().scale_for((144, 176)) == 1.0

"""The faces package: small modules, detectors chosen by name from one registry, and messages
that leave the command-line flags to the command line (the core's topics)."""

from pathlib import Path

import numpy as np
import pytest

from copart import app
from copart.app import main
from copart.media import faces
from copart.models.errors import CopartError

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_of_the_faces_package_is_over_300_lines():
    modules = sorted((ROOT / "copart_cli" / "media").glob("faces*.py")) + \
        sorted((ROOT / "copart_cli" / "media" / "faces").rglob("*.py"))
    assert len(modules) >= 8, modules  # the package and its rooms
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in modules}
    assert max(sizes.values()) <= 300, sizes


class CentreDetector:
    """A detector added to the registry: one face, the middle third of any image."""

    name = "centre"

    def __init__(self, device="cpu"):
        self.device = device

    def detect(self, image):
        h, w = image.shape[:2]
        return [(w / 3, h / 3, 2 * w / 3, 2 * h / 3, 1.0)]


def test_a_detector_in_the_registry_is_chosen_by_name(monkeypatch):
    from copart.media.faces import detectors

    monkeypatch.setitem(detectors.DETECTORS, "centre", CentreDetector)
    made = faces.make_detector("centre", "cpu", [])
    assert isinstance(made, CentreDetector)
    track = faces.make_track("centre", "cpu", 0.3, 25, [])  # what the video commands build
    assert isinstance(track.detector, CentreDetector)
    image = np.zeros((90, 120, 3), np.uint8)
    boxes = [box for _, box in track.track([image] * 3, image_of=lambda f: f)]
    assert all(b is not None for b in boxes), boxes
    assert (boxes[-1].cx, boxes[-1].cy, boxes[-1].side) == pytest.approx((60.0, 45.0, 40 * 1.6))


def test_an_unknown_detector_is_one_sentence_naming_the_known_ones():
    with pytest.raises(CopartError) as raised:
        faces.make_detector("nobody", "cpu", [])
    assert str(raised.value) == "There is no face detector called 'nobody'; the detectors are auto, face-alignment, haar."


def test_a_detector_that_cannot_run_names_no_flag_and_the_command_line_adds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COPART_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CopartError) as raised:
        faces.make_detector("face-alignment", "cpu", [])
    text = str(raised.value)
    assert text.startswith("The face-alignment detector cannot run: ") and "--detector" not in text, text
    assert raised.value.topic == "face-detector"
    assert app.message(raised.value) == text.rstrip(".") + "; or use --detector haar."


def test_swap_with_a_detector_that_cannot_run_says_use_haar(tmp_path, monkeypatch, capsys, carphone, astronaut,
                                                            fixture_checkpoint):
    monkeypatch.setenv("COPART_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "out.mp4"
    with pytest.raises(SystemExit) as stopped:
        main(["swap", "--checkpoint", str(fixture_checkpoint), "--parts", "hair", "--detector", "face-alignment",
              str(carphone), str(astronaut), "-o", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert stopped.value.code == 2 and "Traceback" not in err, err
    assert "The face-alignment detector cannot run: " in err and err.endswith("; or use --detector haar."), err
    assert not out.exists()


def test_a_detector_added_to_the_registry_is_taken_by_the_command_line(tmp_path, monkeypatch, capsys, carphone,
                                                                      astronaut, fixture_checkpoint):
    """A third detector is one file and one registry line: the commands take its name as it is."""
    from copart.media.faces import detectors

    monkeypatch.setitem(detectors.DETECTORS, "centre", CentreDetector)
    out = tmp_path / "out.mp4"
    with pytest.raises(SystemExit) as stopped:
        main(["swap", "--checkpoint", str(fixture_checkpoint), "--parts", "hair", "--detector", "centre",
              "--end", "0.4", str(carphone), str(astronaut), "-o", str(out)])
    assert stopped.value.code == 0, capsys.readouterr().err
    assert out.exists()


def test_an_unknown_detector_is_refused_before_any_work(tmp_path, capsys, carphone, astronaut, fixture_checkpoint):
    out = tmp_path / "out.mp4"
    with pytest.raises(SystemExit) as stopped:
        main(["swap", "--checkpoint", str(fixture_checkpoint), "--parts", "hair", "--detector", "nobody",
              str(carphone), str(astronaut), "-o", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert stopped.value.code != 0 and "Traceback" not in err, err
    assert "There is no face detector called 'nobody'; the detectors are auto, face-alignment, haar." in err, err
    assert not out.exists()


def test_a_reference_without_a_face_names_no_flag_and_the_command_line_adds_it(tmp_path):
    import cv2

    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((120, 120, 3), 128, np.uint8))
    with pytest.raises(CopartError) as raised:
        faces.reference_face(faces.HaarDetector(), grey)
    assert str(raised.value) == f"No face found in reference image {grey}."
    assert raised.value.topic == "face-reference"
    assert app.message(raised.value) == (f"No face found in reference image {grey}; give --face a picture in which "
                                         f"the face to follow is seen from the front.")

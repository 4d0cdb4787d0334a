"""The kinds of synthetic figure: exact part labels, and the differences each kind is for."""

import json

import numpy as np
import pytest

from copart.app import main
from copart.training.figures import HELD_OUT_KINDS, KINDS, part_names, render
from copart.training.synthetic import generate, render_video


def run(capsys, *args) -> tuple[int, str]:
    """``copart ARGS`` through the real entry point: (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return stopped.value.code or 0, captured.out + captured.err


@pytest.fixture(scope="module")
def clips():
    return {kind: render(kind, 11, frames=12, size=64) for kind in KINDS}


def test_every_kind_labels_every_part_and_its_landmarks_sit_on_it(clips):
    for kind, (images, labels, landmarks) in clips.items():
        parts = len(part_names(kind))
        assert images.shape == (12, 64, 64, 3) and labels.shape == (12, 64, 64)
        assert landmarks.shape == (12, 2 * parts, 2)
        assert set(np.unique(labels)) == set(range(parts + 1)), kind  # every part seen, nothing else
        # a landmark lies on its own part unless a part drawn later covers it
        x = np.clip(np.round(landmarks[..., 0]).astype(int), 0, 63)
        y = np.clip(np.round(landmarks[..., 1]).astype(int), 0, 63)
        under = labels[np.arange(12)[:, None], y, x]
        own = np.repeat(np.arange(1, parts + 1), 2)[None]
        assert np.mean(under == own) > 0.7, kind


def test_five_is_the_original_figure(clips):
    images, labels, landmarks = render_video(11, 12, 64)
    assert np.array_equal(clips["five"][0], images) and np.array_equal(clips["five"][1], labels)


def test_the_kinds_differ_in_what_they_are_for(clips):
    def mean_part_share(kind):
        _, labels, _ = clips[kind]
        return np.mean([np.count_nonzero(labels == p) for p in range(1, labels.max() + 1)]) / labels.size

    assert len(part_names("limbs10")) == 10 and mean_part_share("limbs10") < 0.5 * mean_part_share("five")
    figure = lambda kind: np.count_nonzero(clips[kind][1]) / clips[kind][1].size
    assert figure("small") < 0.4 * figure("five")

    def background_change(kind):  # where both frames show background
        images, labels, _ = clips[kind]
        both = (labels[0] == 0) & (labels[6] == 0)
        return np.abs(images[0].astype(int) - images[6])[both].mean()

    assert background_change("limbs10") == 0 and background_change("camera") > 20

    def edges(kind, where):  # mean horizontal gradient inside the figure's parts, or of the background
        images, labels, _ = clips[kind]
        grey = images.mean(-1)
        same = labels[:, :, 1:] == labels[:, :, :-1]  # not across part edges
        inside = same & ((labels[:, :, 1:] > 0) if where == "figure" else (labels[:, :, 1:] == 0))
        return np.abs(np.diff(grey, axis=2))[inside].mean()

    assert edges("textured", "figure") > 1.3 * edges("limbs10", "figure")
    assert edges("textured", "background") > 2 * edges("limbs10", "background")
    # two figures: parts 1-5 and 6-10 are apart
    _, labels, _ = clips["pair"]
    xs = lambda lo, hi: np.nonzero((labels >= lo) & (labels <= hi))[2].mean()
    assert xs(6, 10) - xs(1, 5) > 15
    assert set(HELD_OUT_KINDS) < set(KINDS)


def test_generate_writes_a_kind_and_keeps_old_folders_readable(tmp_path, capsys):
    generate(tmp_path / "limbs", videos=2, frames=4, test=1, kind="limbs10")
    manifest = json.loads((tmp_path / "limbs" / "synthetic.json").read_text())
    assert manifest["kind"] == "limbs10"
    with np.load(tmp_path / "limbs" / "groundtruth" / "figure000.npz") as data:
        assert list(data["part_names"]) == part_names("limbs10") and data["labels"].max() <= 10
    generate(tmp_path / "five", videos=2, frames=4, test=1)
    assert "kind" not in json.loads((tmp_path / "five" / "synthetic.json").read_text())  # as before kinds
    code, output = run(capsys, "synthetic", tmp_path / "limbs", "--videos", "2", "--frames", "4", "--test", "1",
                       "--kind", "pair")
    assert code != 0 and "other settings" in output and "kind limbs10 (now pair)" in " ".join(output.split())


def test_the_command_takes_a_kind_and_refuses_an_unknown_one(tmp_path, capsys):
    code, output = run(capsys, "synthetic", tmp_path / "c", "--videos", "2", "--frames", "4", "--test", "1",
                       "--kind", "camera")
    assert code == 0, output
    assert "kind camera" in output and (tmp_path / "c" / "train" / "figure000.mp4").is_file()
    code, output = run(capsys, "synthetic", tmp_path / "d", "--kind", "octopus")
    assert code != 0 and "Unknown kind of figure 'octopus'" in " ".join(output.split())
    assert "Traceback" not in output and not (tmp_path / "d").exists()


def test_the_benchmark_summary_gives_the_worst_kind_and_keeps_held_out_kinds_apart():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from train_benchmark import summary

    row = lambda kind, nmi, iou, largest, held=False: {"recipe": "r", "kind": kind, "held_out": held,
                                                       "part_nmi": nmi, "iou": iou, "largest_part": largest}
    rows = [row("five", 0.5, 0.7, 0.3), row("five", 0.3, 0.5, 0.5), row("limbs10", 0.2, 0.8, 0.9),
            row("camera", 0.1, 0.2, 0.6, held=True)]
    tuning, held = summary(rows)
    assert tuning["kinds"] == "tuning" and tuning["runs"] == 3 and held["kinds"] == "held out" and held["runs"] == 1
    assert tuning["part_nmi_mean"] == pytest.approx(1 / 3, abs=1e-3)
    assert (tuning["part_nmi_worst"], tuning["part_nmi_worst_kind"]) == (0.2, "limbs10")
    assert (tuning["iou_worst"], tuning["iou_worst_kind"]) == (0.6, "five")  # the kind's mean over seeds
    assert (tuning["largest_part_worst"], tuning["largest_part_worst_kind"]) == (0.9, "limbs10")
    assert held["part_nmi_worst_kind"] == "camera"

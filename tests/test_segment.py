"""copart segment and copart parts on real media."""

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from copart.app import app
from copart.media.read import probe, read_image
from copart.models.errors import CopartError

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [*map(str, args)])


@pytest.fixture(scope="module")
def carphone_parts(tmp_path_factory, carphone, fixture_checkpoint):
    out = tmp_path_factory.mktemp("segment")
    video = out / "carphone.parts.mp4"
    result = _run("segment", carphone, "--checkpoint", fixture_checkpoint, "-o", video, "--masks", out / "m.npz",
                  "--png-dir", out / "labels", "--detector", "haar")
    assert result.exit_code == 0, result.output
    return out


def test_masks_file_shapes_and_sums(carphone_parts):
    data = np.load(carphone_parts / "m.npz")
    assert data["segmentation"].shape == (120, 11, 32, 32) and data["segmentation"].dtype == np.float16
    assert data["shift"].shape == (120, 10, 2) and data["affine"].shape == (120, 10, 2, 2)
    assert data["time"].shape == (120,) and data["box"].shape == (120, 4) and data["valid"].shape == (120,)
    assert data["valid"].sum() >= 114
    sums = data["segmentation"].astype(np.float32).sum(axis=1)
    assert np.abs(sums - 1).max() < 1e-2  # float16 storage
    assert np.all(np.diff(data["time"]) > 0)


def test_overlay_video_keeps_frames_rate_and_duration(carphone_parts, carphone):
    src, dst = probe(carphone), probe(carphone_parts / "carphone.parts.mp4")
    assert (dst["frames"], dst["fps"], dst["width"], dst["height"]) == (src["frames"], src["fps"], 176, 144)
    assert abs(dst["duration"] - src["duration"]) < 1e-3


def test_legend_lists_every_channel(carphone_parts):
    legend = read_image(carphone_parts / "carphone.legend.png")
    column = legend[:, 30]  # through the colour swatches
    swatch = np.any(column < 250, axis=1)
    runs = np.count_nonzero(swatch[1:] & ~swatch[:-1]) + int(swatch[0])
    assert runs == 11  # background + K = 10 parts


def test_label_pngs_equal_the_argmax_of_the_saved_masks(carphone_parts, carphone):
    data = np.load(carphone_parts / "m.npz")
    files = sorted((carphone_parts / "labels").iterdir())
    assert len(files) == 120
    for i in (0, 50, 119):
        label = cv2.imread(str(files[i]), cv2.IMREAD_UNCHANGED)
        assert label.shape == (144, 176) and label.dtype == np.uint8
        expected = np.zeros((144, 176), np.uint8)
        if data["valid"][i]:
            x0, y0, x1, y1 = data["box"][i]
            side = x1 - x0
            maps = np.stack([cv2.resize(m, (side, side), interpolation=cv2.INTER_LINEAR)
                             for m in data["segmentation"][i].astype(np.float32)])
            cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(176, x1), min(144, y1)
            expected[cy0:cy1, cx0:cx1] = maps[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0].argmax(0)
        assert np.array_equal(label, expected)
        assert label.max() <= 10


def test_styles_image_and_folder_inputs(tmp_path, carphone, astronaut, fixture_checkpoint):
    result = _run("segment", carphone, "--checkpoint", fixture_checkpoint, "--no-crop", "--style", "side-by-side",
                  "--hard", "--max-frames", "5", "-o", tmp_path / "sbs.mp4")
    assert result.exit_code == 0, result.output
    info = probe(tmp_path / "sbs.mp4")
    assert (info["width"], info["height"], info["frames"]) == (352, 144, 5)
    assert (tmp_path / "sbs.legend.png").exists()

    image = tmp_path / "face.png"
    shutil.copy(astronaut, image)
    result = _run("segment", image, "--checkpoint", fixture_checkpoint, "--style", "mask", "--detector", "haar")
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "face.parts.png").shape == read_image(image).shape

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        shutil.copy(astronaut, frames / f"f{i * 5}.png")  # natural order: f0, f5, f10
    result = _run("segment", frames, "--checkpoint", fixture_checkpoint, "--no-crop", "--smooth", "3",
                  "--masks", tmp_path / "frames.npz")
    assert result.exit_code == 0, result.output
    assert probe(tmp_path / "frames.parts.mp4")["frames"] == 3
    assert np.load(tmp_path / "frames.npz")["segmentation"].shape[0] == 3


def test_bad_input_leaves_nothing(tmp_path, fixture_checkpoint):
    (tmp_path / "x.mp4").write_text("no video here")
    result = _run("segment", tmp_path / "x.mp4", "--checkpoint", fixture_checkpoint, "--masks",
                  tmp_path / "m.npz", "--png-dir", tmp_path / "labels")
    assert isinstance(result.exception, CopartError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]


def test_png_dir_never_takes_anything_but_its_own_labels(tmp_path, fixture_checkpoint, carphone, monkeypatch):
    clip = tmp_path / "x" / "clip.mp4"
    clip.parent.mkdir()
    shutil.copy(carphone, clip)
    (tmp_path / "x" / "notes.txt").write_text("mine")
    common = ["segment", clip, "--checkpoint", fixture_checkpoint, "--no-crop", "--max-frames", "2"]
    for extra in (["--png-dir", tmp_path / "x", "--force"],  # the input's folder
                  ["--png-dir", tmp_path / "L", "-o", tmp_path / "L" / "o.mp4"],  # would hold an output
                  ["--png-dir", clip, "--force"]):  # a file
        (tmp_path / "L").mkdir(exist_ok=True)
        result = _run(*common, *extra)
        assert isinstance(result.exception, CopartError), (extra, result.output)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["clip.mp4", "notes.txt"]
    labels = tmp_path / "L"
    assert _run(*common, "-o", tmp_path / "o.mp4", "--png-dir", labels).exit_code == 0  # an empty folder
    assert sorted(p.name for p in labels.iterdir()) == ["000000.png", "000001.png"]
    again = _run(*common, "-o", tmp_path / "o.mp4", "--png-dir", labels)
    assert "--force" in str(again.exception)
    assert _run(*common, "-o", tmp_path / "o.mp4", "--force", "--png-dir", labels, "--max-frames", "1").exit_code == 0
    assert sorted(p.name for p in labels.iterdir()) == ["000000.png"]  # its own labels replaced

    # A folder of frames named like labels is the input: never the label folder.
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        shutil.copy(labels / "000000.png", frames / f"{i:06d}.png")
    result = _run("segment", frames, "--checkpoint", fixture_checkpoint, "--no-crop", "-o", tmp_path / "f.mp4",
                  "--png-dir", frames, "--force")
    assert isinstance(result.exception, CopartError), result.output
    assert sorted(p.name for p in frames.iterdir()) == ["000000.png", "000001.png"]
    (tmp_path / "link").symlink_to(labels)
    result = _run(*common, "-o", tmp_path / "o.mp4", "--force", "--png-dir", tmp_path / "link")
    assert isinstance(result.exception, CopartError) and "link" in str(result.exception)
    assert sorted(p.name for p in labels.iterdir()) == ["000000.png"]
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    result = _run(*common, "-o", tmp_path / "o.mp4", "--force", "--png-dir", ".")
    assert isinstance(result.exception, CopartError) and "current folder" in str(result.exception)


def test_part_names_round_trip(tmp_path, fixture_checkpoint, carphone):
    listed = _run("parts", fixture_checkpoint, "--json")
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.output)
    assert report["num_segments"] == 10 and len(report["parts"]) == 11
    assert report["part_names"] == {"hair": [3, 4, 5], "lips": [2]}

    named = tmp_path / "named.pth"
    result = _run("parts", fixture_checkpoint, "--name", "eyes=7,9", "--name", "lips=2,1", "-o", named)
    assert result.exit_code == 0, result.output
    report = json.loads(_run("parts", named, "--json").output)
    assert report["part_names"] == {"hair": [3, 4, 5], "lips": [2, 1], "eyes": [7, 9]}
    assert report["parts"][7]["names"] == ["eyes"]

    # The new names work where --parts takes names.
    out = tmp_path / "eyes.mp4"
    assert _run("swap", "--checkpoint", named, "--parts", "eyes", "--no-crop", "--max-frames", "2", carphone,
                carphone, "-o", out).exit_code == 0

    before = named.read_bytes()
    assert isinstance(_run("parts", named, "--name", "x=1").exception, CopartError)  # needs -o or --in-place
    assert isinstance(_run("parts", named, "--name", "x=1", "-o", named).exception, CopartError)
    assert isinstance(_run("parts", named, "--name", "x=99", "--in-place").exception, CopartError)
    assert named.read_bytes() == before
    assert _run("parts", named, "--name", "x=1", "--in-place").exit_code == 0
    assert json.loads(_run("parts", named, "--json").output)["part_names"]["x"] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eyes.mp4", "named.pth"]


def test_smoothing_is_a_centred_moving_average():
    from copart.editing.segment import smoothed

    def item(value):
        return (None, None, {"segmentation": np.full((1, 1, 1), value, np.float16)})

    values = [90, 0, 0, 0, 0]
    out = [o["segmentation"].item() for _, _, o in smoothed((item(v) for v in values), 3)]
    assert out == [45, 30, 0, 0, 0]
    impulse = [0, 0, 60, 0, 0, 0]
    two = [o["segmentation"].item() for _, _, o in smoothed((item(v) for v in impulse), 2)]
    assert two == [0, 30, 30, 0, 0, 0]  # N frames exactly: this one and the next
    four = [o["segmentation"].item() for _, _, o in smoothed((item(v) for v in impulse), 4)]
    assert four == [20, 15, 15, 15, 0, 0]  # one behind, two ahead (fewer at the ends)

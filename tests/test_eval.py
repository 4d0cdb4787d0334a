"""The paper's metrics with known answers, and copart eval on synthetic data."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from copart.app import app
from copart.evaluation import metrics
from copart.models.errors import CopartError
from copart.training.synthetic import generate, render_video

runner = CliRunner()


def _one_hot(labels: np.ndarray, k: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([(labels == c) for c in range(k + 1)], axis=1).astype(np.float32))


@pytest.fixture(scope="module")
def clip():
    images, labels, landmarks = render_video(7, frames=40, size=64)
    return images, labels, landmarks


def test_ground_truth_part_maps_give_iou_one_and_near_zero_mae(clip):
    _, labels, landmarks = clip
    maps = _one_hot(labels, 5)
    assert metrics.iou(metrics.foreground(maps, (64, 64)), labels > 0)["iou_mean"] == 1.0
    centres = metrics.part_centres(maps, (64, 64))
    result = metrics.landmark_regression(centres[:30], landmarks[:30], centres[30:], landmarks[30:])
    # Landmarks are rigid points of the parts, so the part centres predict them closely: the
    # residue (rotation, occlusion, rasterisation) is a small fraction of predicting the mean.
    mean_predictor = np.abs(landmarks[30:] - landmarks[:30].mean(axis=0)).mean()
    assert len(result["per_coordinate"]) == 20
    assert result["mae_mean"] < 1.0 and result["mae_mean"] < 0.2 * mean_predictor, (result["mae_mean"], mean_predictor)


def test_part_maps_whose_centres_are_an_affine_function_of_landmarks_give_zero_mae():
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(0, 64, (60, 3, 2))
    matrix = np.array([[0.3, 0.1], [-0.1, 0.25]])
    centres = landmarks @ matrix.T + [22, 20]  # inside the image, away from its border
    yy, xx = np.mgrid[:64, :64]
    maps = np.zeros((60, 4, 64, 64), np.float32)
    for n in range(60):
        for k in range(3):
            blob = np.exp(-((xx - centres[n, k, 0]) ** 2 + (yy - centres[n, k, 1]) ** 2) / (2 * 2.0**2))
            maps[n, k + 1] = blob / blob.max()
    maps[:, 0] = np.clip(1 - maps[:, 1:].sum(1), 0, 1)
    found = metrics.part_centres(torch.from_numpy(maps), (64, 64))
    assert np.abs(found - centres).max() < 0.5
    result = metrics.landmark_regression(found[:40], landmarks[:40], found[40:], landmarks[40:])
    assert result["mae_mean"] < 0.05, result["mae_mean"]


def test_a_constant_part_map_gives_the_mae_of_predicting_the_mean(clip):
    _, _, landmarks = clip
    maps = torch.full((40, 6, 16, 16), 1 / 6)
    centres = metrics.part_centres(maps, (64, 64))
    result = metrics.landmark_regression(centres[:30], landmarks[:30], centres[30:], landmarks[30:])
    expected = np.abs(landmarks[30:] - landmarks[:30].mean(axis=0)).mean(axis=0).ravel()
    assert np.allclose(result["per_coordinate"], expected, atol=1e-6)
    assert np.isclose(result["mae_sum"], expected.sum())


def test_missing_landmarks_are_skipped_per_coordinate():
    rng = np.random.default_rng(1)
    landmarks = rng.uniform(0, 64, (50, 2, 2))
    centres = landmarks[:, :1] * 2 + 1  # predicts landmark 0 exactly
    noisy = landmarks.copy()
    noisy[:10, 0, 0] = -1  # missing in the fit set: left out, not fitted as -1
    noisy[45:, 0, 0] = -1  # missing in the held-out set: not scored
    result = metrics.landmark_regression(centres[:40], noisy[:40], centres[40:], noisy[40:])
    assert result["per_coordinate"][0] < 1e-9 and result["per_coordinate"][1] < 1e-9


def test_regression_with_fewer_images_than_centres_is_scikit_learns():
    """LinearRegression centres the data: a constant landmark is predicted exactly even when
    the fit set is smaller than the number of centre coordinates (a column of ones is not)."""
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 64, (8, 10, 2))
    landmarks = np.full((8, 1, 2), 30.0)
    result = metrics.landmark_regression(centres[:5], landmarks[:5], centres[5:], landmarks[5:])
    assert result["mae_sum"] < 1e-9, result


def test_the_paper_protocol_centre_convention():
    """A single bright pixel at column i, row j has its centre at (i, j) in pixels (grid i/W*2-1)."""
    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 1, 2, 5] = 1.0
    maps[0, 0] = 1 - maps[0, 1]
    centre = metrics.part_centres(maps, (8, 8))[0, 0]
    assert np.allclose(centre, (5, 2), atol=0.01)


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    generate(out, videos=4, frames=16, size=64, test=1)
    return out / "eval"


def test_eval_command_on_the_synthetic_layout(tmp_path, eval_root, fixture_checkpoint):
    plot = tmp_path / "plot.png"
    result = runner.invoke(app, ["eval", str(eval_root), "--checkpoint", str(fixture_checkpoint), "--metric", "all",
                                 "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["fit_images"] == 12 and report["test_images"] == 16 and report["mae"]["landmarks"] == 10
    assert 0 <= report["iou"]["iou_mean"] <= 1 and report["mae"]["sum"] > 0
    assert plot.exists()
    table = runner.invoke(app, ["eval", str(eval_root), "--checkpoint", str(fixture_checkpoint), "--metric", "iou"])
    assert table.exit_code == 0 and "foreground IoU" in table.output and "MAE" not in table.output


def test_authors_pickle_reads_only_with_the_flag(tmp_path, eval_root, fixture_checkpoint):
    pd = pytest.importorskip("pandas")
    import shutil

    root = tmp_path / "authors"
    shutil.copytree(eval_root, root)
    for split in ("train", "test"):
        data = np.load(root / f"{split}_landmarks.npz")
        frame = pd.DataFrame({"file_name": list(data["file_name"]), "frame_number": 0,
                              "value": list(data["landmarks"])})
        frame.to_pickle(root / f"synthetic_{split}_gt.pkl")
        (root / f"{split}_landmarks.npz").unlink()
    args = ["eval", str(root), "--checkpoint", str(fixture_checkpoint), "--metric", "mae", "--json"]
    refused = runner.invoke(app, args)
    assert isinstance(refused.exception, CopartError) and "--trust-pickle" in str(refused.exception)
    assert not (root / "synthetic_train_gt.npz").exists()
    trusted = runner.invoke(app, args + ["--trust-pickle"])
    assert trusted.exit_code == 0, trusted.output
    assert (root / "synthetic_train_gt.npz").exists()  # converted once to a safe format
    again = runner.invoke(app, args)  # now without the flag: the converted file is read
    assert again.exit_code == 0
    assert json.loads(again.output[again.output.index("{"):])["mae"] == \
        json.loads(trusted.output[trusted.output.index("{"):])["mae"]


def test_missing_things_are_one_sentence(tmp_path, fixture_checkpoint):
    result = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--checkpoint", str(fixture_checkpoint)])
    assert isinstance(result.exception, CopartError) and "does not exist" in str(result.exception)
    (tmp_path / "test").mkdir()
    result = runner.invoke(app, ["eval", str(tmp_path), "--checkpoint", str(fixture_checkpoint)])
    assert isinstance(result.exception, CopartError) and "holds no images" in str(result.exception)


def test_images_without_landmarks_get_face_alignment_on_a_real_device(tmp_path, eval_root, fixture_checkpoint,
                                                                      monkeypatch):
    """face-alignment's weights cannot be downloaded here: a stand-in records what copart asks of it."""
    import shutil
    import sys
    import types

    from copart.loading import pick_device

    root = tmp_path / "faces"
    shutil.copytree(eval_root, root)
    for split in ("train", "test"):
        (root / f"{split}_landmarks.npz").unlink()
    devices = []

    class Aligner:
        def __init__(self, kind, device, flip_input, face_detector_kwargs):
            devices.append(device)

        def get_landmarks_from_image(self, image):
            return [np.tile([[10.0, 20.0, 0.0]], (68, 1))]

    fake = types.SimpleNamespace(FaceAlignment=Aligner, LandmarksType=types.SimpleNamespace(TWO_D=1))
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    # The stand-in needs no weights: the online path is tested (conftest's socket guard still holds);
    # copart's hub finds face-alignment's two files already in the (temporary) hub cache.
    monkeypatch.delenv("COPART_OFFLINE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    for name in ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar"):
        (tmp_path / "torch" / "hub" / "checkpoints" / name).write_bytes(b"stand-in")
    args = ["eval", str(root), "--checkpoint", str(fixture_checkpoint), "--metric", "mae", "--json"]
    result = runner.invoke(app, args)  # --device auto
    assert result.exit_code == 0, result.output
    assert devices == [pick_device("auto")] * 2
    report = json.loads(result.output[result.output.index("{"):])
    assert report["mae"]["landmarks"] == 68 and report["mae"]["sum"] < 1e-6  # constant landmarks
    assert sorted(p.name for p in root.glob("*_landmarks.npz")) == ["test_landmarks.npz", "train_landmarks.npz"]
    assert runner.invoke(app, args).exit_code == 0 and len(devices) == 2  # cached


def test_kmeans_baseline_shapes(clip):
    images, _, _ = clip
    maps = metrics.kmeans_parts(images[0], 5)
    assert maps.shape == (6, 64, 64) and np.allclose(maps.sum(0), 1)


# Four points of the astronaut's face (eyes, nose tip, mouth) in scikit-image's 512x512 photo.
ASTRONAUT_FACE_POINTS = np.array([[200, 105], [245, 100], [225, 125], [222, 147]], np.float64)


def _off_centre_faces(root, photo, rng, counts=(("train", 16), ("test", 6)), canvas=(480, 640)):
    """Evaluation images in which her head (a 280x300 cut of the photo) sits at a random place
    of a larger grey canvas, with the face points in full-image coordinates."""
    import cv2

    head = photo[0:300, 80:360]
    points = ASTRONAUT_FACE_POINTS - [80, 0]
    h, w = head.shape[:2]
    for split, count in counts:
        (root / split).mkdir(parents=True)
        names, landmarks = [], []
        for i in range(count):
            x, y = int(rng.integers(0, canvas[1] - w)), int(rng.integers(0, canvas[0] - h))
            image = np.full((*canvas, 3), 128, np.uint8)
            image[y : y + h, x : x + w] = head
            cv2.imwrite(str(root / split / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            names.append(f"{i}.png")
            landmarks.append(points + [x, y])
        np.savez(root / f"{split}_landmarks.npz", file_name=np.asarray(names), landmarks=np.stack(landmarks))


def test_crop_segments_the_face_and_places_its_part_maps_back_in_the_image(tmp_path, astronaut, fixture_checkpoint,
                                                                           monkeypatch):
    """--crop feeds the model the face's crop and puts its part maps back where the crop came
    from: the part centres then move with the face exactly, and regress its points to a small
    fraction of a pixel. The whole canvas squeezed to the model's input does not (nor would
    maps put back anywhere else: their centres would not follow the face)."""
    from copart.media.read import read_image

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no S3FD weights: auto falls back to Haar
    root = tmp_path / "faces"
    _off_centre_faces(root, read_image(astronaut), np.random.default_rng(0))
    args = ["eval", str(root), "--checkpoint", str(fixture_checkpoint), "--metric", "mae", "--json"]
    plot = tmp_path / "p.png"
    cropped = runner.invoke(app, args + ["--crop", "--plot", str(plot)])
    assert cropped.exit_code == 0, cropped.output
    assert "Haar cascade" in cropped.output  # the no-download detector, since COPART_OFFLINE=1
    whole = runner.invoke(app, args)
    assert whole.exit_code == 0, whole.output
    with_crop = json.loads(cropped.output[cropped.output.index("{"):])["mae"]
    without = json.loads(whole.output[whole.output.index("{"):])["mae"]
    assert with_crop["landmarks"] == 4
    # Predicting the mean position would miss by tens of pixels; the squeezed canvas by pixels.
    assert with_crop["mean"] < 0.5 and with_crop["mean"] < 0.2 * without["mean"], (with_crop, without)
    assert read_plot_size(plot) == (256, 6 * 256)  # one 256x256 tile per test image


def read_plot_size(path):
    from copart.media.read import read_image

    return read_image(path).shape[:2]

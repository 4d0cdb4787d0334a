"""Parts that are parts: the part-level scores, the recipe's levers and training by time."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from copart import presets
from copart.app import app
from copart.evaluation import metrics
from copart.models import CoPartModel, ModelConfig
from copart.models.checkpoint import read_checkpoint
from copart.models.losses import concentration_loss
from copart.models.segmentation import PartSegmentation, region_moments
from copart.training.data import PairDataset, discover
from copart.training.synthetic import generate, render_video

runner = CliRunner()


def one_hot(labels: np.ndarray, channels: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([labels == c for c in range(channels)], 1).astype(np.float32))


@pytest.fixture(scope="module")
def clip():
    return render_video(3, frames=8, size=64)


def test_the_true_parts_score_one_and_one_blob_scores_zero(clip):
    _, labels, _ = clip
    truth = one_hot(labels, 6)
    perfect = metrics.part_scores(truth, labels, truth, labels)
    assert perfect["part_nmi"] == pytest.approx(1.0) and perfect["part_miou"] == pytest.approx(1.0)
    torso_share = np.count_nonzero(labels == 1) / np.count_nonzero(labels > 0)
    assert perfect["largest_part"] == pytest.approx(torso_share) and perfect["parts_used"] == 5
    blob = one_hot((labels > 0).astype(np.uint8) * 2, 6)  # one part (channel 2) over every figure
    single = metrics.part_scores(blob, labels, blob, labels)
    assert single["part_nmi"] == pytest.approx(0.0) and single["largest_part"] == 1.0 and single["parts_used"] == 1
    assert single["part_miou"] == pytest.approx(torso_share / 5)  # the torso alone, found as the whole figure


def test_nmi_does_not_care_about_names_and_matches_its_definition():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 1000)
    assert metrics.normalised_mutual_information(a, (a + 1) % 4 * 7) == pytest.approx(1.0)
    b = np.where(rng.random(1000) < 0.5, a, rng.integers(0, 4, 1000))
    # by hand: I(a;b) / mean(H(a), H(b))
    joint = np.histogram2d(a, b, bins=(4, 4))[0] / 1000
    pa, pb = joint.sum(1), joint.sum(0)
    mi = np.nansum(joint * np.log(joint / np.outer(pa, pb)))
    h = lambda p: -np.sum(p * np.log(p))
    assert metrics.normalised_mutual_information(a, b) == pytest.approx(mi / ((h(pa) + h(pb)) / 2))


def test_region_moments_give_the_mean_and_the_principal_axes():
    h = w = 48
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    angle = torch.tensor(0.6)
    u = torch.cos(angle) * (xx - 0.2) + torch.sin(angle) * (yy + 0.1)
    v = -torch.sin(angle) * (xx - 0.2) + torch.cos(angle) * (yy + 0.1)
    blob = torch.exp(-(u**2 / 0.08 + v**2 / 0.01)).view(1, 1, h, w)
    shift, matrix = region_moments(blob)
    assert shift[0, 0].tolist() == pytest.approx([0.2, -0.1], abs=1e-3)
    assert float(torch.atan2(matrix[0, 0, 1, 0], matrix[0, 0, 0, 0])) == pytest.approx(0.6, abs=1e-3)
    assert float(torch.linalg.det(matrix[0, 0])) > 0
    # A round or empty map has no axis: still finite, with finite gradients.
    flat = torch.full((1, 2, 8, 8), 1e-3, requires_grad=True)
    shift, matrix = region_moments(flat)
    matrix.sum().backward()
    assert torch.isfinite(matrix).all() and torch.isfinite(flat.grad).all()


def test_a_model_with_moment_regions_computes_its_anchors_from_its_part_maps():
    config = presets.load("cpu-64-sem-5segments")
    config["model_params"]["segmentation_module_params"]["region_estimate"] = "moments"
    model = CoPartModel(ModelConfig.from_dict(config))
    seg = model.segment(torch.rand(2, 3, 64, 64))
    shift, matrix = region_moments(seg.segmentation[:, 1:])
    assert torch.allclose(seg.shift, shift) and torch.allclose(seg.affine, matrix)
    stored = ModelConfig.from_dict(config).model_params()["segmentation_module_params"]
    assert stored["region_estimate"] == "moments"
    # The paper's settings are not written: a published model's stored config is unchanged.
    paper = ModelConfig.from_dict(presets.load("vox-256-sem-10segments")).model_params()
    assert "region_estimate" not in paper["segmentation_module_params"]
    assert "part_temperature" not in paper["segmentation_module_params"]


def test_concentration_is_lower_for_compact_parts_than_for_one_blob(clip):
    _, labels, _ = clip
    parts = one_hot(labels, 6)
    blob = one_hot((labels > 0).astype(np.uint8), 6)
    as_seg = lambda maps: PartSegmentation(maps, torch.zeros(len(maps), 5, 2), None)
    # Channels 2-5 of the blob are empty; compare the figure's only part with the true parts' mean.
    assert float(concentration_loss(as_seg(parts))) < float(concentration_loss(as_seg(blob[:, :2])))


def test_pairs_can_be_kept_apart_in_time(tmp_path):
    generate(tmp_path / "d", videos=2, frames=24, size=64, test=0)
    clips, _ = discover(tmp_path / "d", "train", 64)
    dataset = PairDataset(clips, (64, 64), None, min_frame_distance=10)
    seen = []
    import copart.training.data as data

    original = data.read_frames
    data.read_frames = lambda clip, indices, size: seen.append(indices) or original(clip, indices, size)
    try:
        for seed in range(20):
            dataset[(0, seed)]
    finally:
        data.read_frames = original
    assert all(b - a >= 10 for a, b in seen) and len({tuple(s) for s in seen}) > 5


def test_minutes_stops_training_with_a_finished_run_that_resumes(tmp_path):
    generate(tmp_path / "d", videos=4, frames=24, size=64, test=1)
    run = tmp_path / "run"
    base = ["train", "--preset", "cpu-64-sem-5segments", "--batch-size", "2", "--workers", "0", "--vis-every", "0"]
    result = runner.invoke(app, [*base, "--data", str(tmp_path / "d"), "--out", str(run), "--minutes", "0.05"])
    assert result.exit_code == 0, result.output
    stored = read_checkpoint(run / "checkpoint.pth")
    step = int(stored["step"])
    # a finished run: the steps it reached are its steps (the preset's epochs would be 100s of steps)
    assert step >= 2 and stored["train"]["steps"] == step
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == step and f"Trained to step {step}" in result.output
    again = runner.invoke(app, ["train", "--resume", str(run), "--steps", str(step + 2)])
    assert again.exit_code == 0, again.output
    assert int(read_checkpoint(run / "checkpoint.pth")["step"]) == step + 2
    more = runner.invoke(app, ["train", "--resume", str(run), "--minutes", "0.02"])
    assert more.exit_code == 0, more.output
    assert int(read_checkpoint(run / "checkpoint.pth")["step"]) > step + 2


def test_the_recipe_keys_are_checked():
    config = presets.load("cpu-64-sem-5segments")
    config["model_params"]["segmentation_module_params"]["region_estimate"] = "pca"
    with pytest.raises(Exception, match="region_estimate"):
        ModelConfig.from_dict(config)


def test_keep_outside_leaves_the_target_pixels_outside_the_mask_and_the_paper_swap_inside():
    torch.manual_seed(0)
    model = CoPartModel(ModelConfig.from_dict(presets.load("cpu-64-sem-5segments"))).eval()
    rec = model.reconstruction_module
    source, target = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 10:24] = 1  # a part's hard mask at the part maps' resolution
    with torch.no_grad():
        seg_source, seg_target = model.segment(source), model.segment(target)
        features = rec.encode(source)
        paper = rec.swap(features, seg_source, target, seg_target, mask)
        kept = rec.swap(features, seg_source, target, seg_target, mask, keep_outside=True)
    full = torch.nn.functional.interpolate(mask, size=(64, 64), mode="bilinear", align_corners=False).expand_as(target)
    assert torch.equal(kept[full == 0], target[full == 0])
    assert torch.allclose(kept[full == 1], paper[full == 1])
    assert not torch.allclose(paper[full == 0], target[full == 0])  # the paper's decoder redraws outside

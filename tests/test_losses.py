"""Reconstruction losses (perceptual / pixel pyramid) and the equivariance loss."""

import pytest
import torch

from copart import presets
from copart.models import CopartError, CoPartModel, ModelConfig, losses
from copart.models.losses import Objective, Transform, Vgg19, equivariance_loss


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache and no network: downloads fail as they do offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _small_model():
    torch.manual_seed(0)
    return CoPartModel(ModelConfig.from_dict(presets.load("cpu-64-sem-5segments"))).eval()


def test_equivariance_is_zero_under_identity_and_grows_with_a_random_transform():
    model = _small_model()
    target = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        seg_target = model.segment(target)
    identity = Transform(2, sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    transformed = identity.transform_frame(target)
    assert torch.allclose(transformed, target, atol=1e-5)
    with torch.no_grad():
        zero = equivariance_loss(seg_target, model.segment(transformed), identity)
    assert zero["equivariance_shift"] < 1e-5 and zero["equivariance_affine"] < 1e-5

    random = Transform(2, sigma_affine=0.3, sigma_tps=0.05, points_tps=5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        moved = equivariance_loss(seg_target, model.segment(random.transform_frame(target)), random)
    assert moved["equivariance_shift"] > 1e-3 and moved["equivariance_affine"] > 1e-3


def test_transform_jacobian_of_affine_is_its_matrix():
    t = Transform(3, sigma_affine=0.2, generator=torch.Generator().manual_seed(0))
    points = torch.rand(3, 4, 2) * 2 - 1
    jac = t.jacobian(points)
    assert torch.allclose(jac, t.theta[:, None, :, :2].expand(3, 4, 2, 2), atol=1e-6)


def test_perceptual_loss_without_weights_fails_with_the_clear_message(hub):
    with pytest.raises(CopartError) as err:
        Vgg19.pretrained()
    message = str(err.value)
    assert losses.VGG19_FILE in message and str(hub) in message and "pixel" in message
    assert "\n" not in message
    with pytest.raises(CopartError, match="pixel"):
        Objective({"loss": "perceptual"})


def test_perceptual_loss_loads_the_cached_file(hub):
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    fake = {f"features.{k}": v for k, v in Vgg19().features.state_dict().items()}
    fake["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file has a classifier; it is ignored
    torch.save(fake, hub / losses.VGG19_FILE)
    vgg = Vgg19.pretrained()
    assert torch.equal(vgg.features[0].weight, fake["features.0.weight"])
    loss = losses.PerceptualPyramidLoss([1, 0.5, 0.25, 0.125], [10] * 5, vgg)
    x, y = torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)
    assert loss(x, x) == 0
    assert loss(x, y) > 0
    assert [f.shape[1] for f in vgg(x)] == [64, 128, 256, 512, 512]


def test_pixel_pyramid_loss():
    loss = losses.PixelPyramidLoss([1, 0.5, 0.25], weight=10)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert loss(x, x) == 0 and loss(x, y) > 0


def test_one_training_step_changes_weights_with_finite_losses():
    config = presets.load("cpu-64-sem-5segments")
    model = CoPartModel(ModelConfig.from_dict(config)).train()
    objective = Objective(config["train_params"])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source, target = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    values, _ = objective(model, source, target)
    assert set(values) == {"pixel", "equivariance_shift", "equivariance_affine"}
    assert all(torch.isfinite(v) for v in values.values())
    sum(values.values()).backward()
    optimizer.step()
    after = model.state_dict()
    for key in ("segmentation_module.segmentation.weight", "segmentation_module.shift.weight",
                "segmentation_module.affine.weight", "reconstruction_module.final.weight"):
        assert not torch.equal(before[key], after[key]), key

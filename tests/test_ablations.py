"""Table 1(b) as configuration: each switch does what it says."""

import pytest
import torch

from copart import presets
from copart.models import VARIANTS, CopartError, CoPartModel, ModelConfig, apply_variant


def _model(variant: str) -> CoPartModel:
    config = apply_variant(presets.load("cpu-64-sem-5segments"), variant)
    torch.manual_seed(0)
    return CoPartModel(ModelConfig.from_dict(config))


def _frames():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)


def test_every_variant_trains_a_step():
    source, target = _frames()
    for variant in VARIANTS:
        model = _model(variant)
        out = model(source, target)
        loss = (out["prediction"] - target).abs().mean()
        loss.backward()
        assert torch.isfinite(loss)
        assert model.segmentation_module.segmentation.weight.grad is not None


def test_shift_only_has_no_affine_head_and_no_visibility():
    model = _model("shift-only")
    assert model.segmentation_module.affine is None
    assert not any(k.startswith("affine.") for k in model.segmentation_module.state_dict())
    source, target = _frames()
    out = model(source, target)
    assert out["seg_target"].affine is None
    assert "visibility_maps" not in out and "flow" in out


def test_affine_only_has_affine_and_no_visibility():
    model = _model("affine-only")
    out = model(*_frames())
    assert out["seg_target"].affine is not None
    assert "visibility_maps" not in out


def _background_grad(variant: str) -> torch.Tensor:
    """Gradient of the visibility with respect to the target's background part map."""
    model = _model(variant)
    source, target = _frames()
    seg_source = model.segment(source)
    seg_target = model.segment(target)
    seg_map = seg_target.segmentation.detach().requires_grad_(True)
    seg_target = seg_target._replace(segmentation=seg_map)
    out = model.reconstruction_module(source, seg_source, seg_target)
    out["visibility_maps"].sum().backward()
    return seg_map.grad


def test_v_back_prop_lets_gradient_reach_target_background_through_v():
    grad = _background_grad("v-back-prop")
    assert grad is not None and grad[:, 1:].abs().sum() > 0


def test_full_model_detaches_target_term_of_v():
    grad = _background_grad("full")
    assert grad is None or grad.abs().sum() == 0


def test_naive_uses_no_flow():
    model = _model("naive").eval()
    source, target = _frames()
    with torch.no_grad():
        seg_source = model.segment(source)
        seg_target = model.segment(target)
        out = model.reconstruction_module(source, seg_source, seg_target)
        assert "flow" not in out and "deformed" not in out
        moved = seg_source._replace(shift=seg_source.shift + 0.5, affine=seg_source.affine * 2)
        moved_target = seg_target._replace(shift=seg_target.shift - 0.3)
        again = model.reconstruction_module(source, moved, moved_target)
        other_maps = seg_target._replace(segmentation=seg_target.segmentation.flip(-1))
        changed = model.reconstruction_module(source, seg_source, other_maps)
    # No motion: anchors and matrices change nothing; the target's part maps do.
    assert torch.equal(out["prediction"], again["prediction"])
    assert (out["prediction"] - changed["prediction"]).abs().max() > 1e-6
    assert "fuse.weight" in model.reconstruction_module.state_dict()
    # Part swap works with the target's mask; a source mask cannot be warped: one sentence.
    state = model.prepare_source(source[:1])
    with torch.no_grad():
        assert model.swap(state, target, [1, 2]).shape == target.shape
        with pytest.raises(CopartError, match="Naive"):
            model.swap(state, target, [1, 2], use_source_segmentation=True)


def test_full_is_the_default():
    full = ModelConfig.from_dict(presets.load("cpu-64-sem-5segments"))
    assert ModelConfig.from_dict(apply_variant(presets.load("cpu-64-sem-5segments"), "full")) == full


def test_unknown_variant_is_one_sentence():
    from copart.models import CopartError

    with pytest.raises(CopartError, match="choose one of"):
        apply_variant({}, "bogus")

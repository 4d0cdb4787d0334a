"""copart computes what the authors' code computes: every fixture tensor, from both layouts."""

import pytest
import torch

from copart.models.checkpoint import init_from_fomm, load_model, read_checkpoint
from copart.models.config import ModelConfig
from copart.models.model import CoPartModel

from .conftest import REFERENCE

TOLERANCE = 1e-5
# The source image warped at full resolution: CPUs' convolution kernels round the
# flow differently and image gradients multiply it (fixtures/README.md).
TOLERANCE_DEFORMED = 1e-4


def _from_authors(config):
    return load_model(REFERENCE / "reference-format.pth.tar", config=config).model


def _from_fomm(config):
    model = CoPartModel(ModelConfig.from_dict(config))
    notes = init_from_fomm(model, read_checkpoint(REFERENCE / "fomm-format.pth.tar"))
    assert not any("start fresh" in n for n in notes), notes
    return model.eval()


LOADERS = {"authors": _from_authors, "fomm": _from_fomm}


def _close(name, actual, expected):
    tol = TOLERANCE_DEFORMED if name == "reconstruction.deformed" else TOLERANCE
    assert actual.shape == expected.shape, name
    err = (actual - expected).abs().max().item()
    assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


@pytest.fixture(scope="module", params=sorted(LOADERS))
def model(request, reference_config):
    return LOADERS[request.param](reference_config)


def test_segmentation(model, reference_tensors):
    t = reference_tensors
    with torch.no_grad():
        for name, frames in (("seg_source", t["source"]), ("seg_target", t["target"])):
            seg = model.segment(frames)
            for field in ("segmentation", "shift", "affine"):
                _close(f"{name}.{field}", getattr(seg, field), t[f"{name}.{field}"])


def test_reconstruction(model, reference_tensors):
    t = reference_tensors
    with torch.no_grad():
        seg_source = model.segment(t["source"])
        seg_target = model.segment(t["target"])
        out = model.reconstruction_module(t["source"].repeat(2, 1, 1, 1), seg_source.expand(2), seg_target)
    for key in ("prediction", "deformed", "visibility_maps"):
        _close(f"reconstruction.{key}", out[key], t[f"reconstruction.{key}"])


def test_reconstruction_from_reference_segmentations(model, reference_tensors):
    """The reconstruction module alone, fed the authors' own segmentations."""
    t = reference_tensors
    from copart.models.segmentation import PartSegmentation

    seg_source = PartSegmentation(*(t[f"seg_source.{f}"] for f in ("segmentation", "shift", "affine")))
    seg_target = PartSegmentation(*(t[f"seg_target.{f}"] for f in ("segmentation", "shift", "affine")))
    with torch.no_grad():
        out = model.reconstruction_module(t["source"], seg_source, seg_target)
    for key in ("prediction", "deformed", "visibility_maps"):
        _close(f"reconstruction.{key}", out[key], t[f"reconstruction.{key}"])


@pytest.mark.parametrize("case", ["soft_target", "hard_target", "soft_source"])
def test_part_swap(model, reference_tensors, swap_cases, case):
    t = reference_tensors
    spec = swap_cases[case]
    with torch.no_grad():
        source = model.prepare_source(t["source"])
        out = model.swap(source, t["target"], spec["parts"], hard=spec["hard"],
                         use_source_segmentation=spec["use_source_segmentation"])
    _close(f"swap.{case}", out, t[f"swap.{case}"])


def test_swap_source_computed_once_serves_every_batch(model, reference_tensors, swap_cases):
    """The cached source state gives the same frames whether targets come in one batch or one by one."""
    t = reference_tensors
    spec = swap_cases["soft_source"]
    with torch.no_grad():
        source = model.prepare_source(t["source"])
        both = model.swap(source, t["target"], spec["parts"], use_source_segmentation=True)
        one = torch.cat([model.swap(source, t["target"][i : i + 1], spec["parts"], use_source_segmentation=True)
                         for i in range(2)])
    assert (both - one).abs().max() < 1e-5


def test_swap_modes_differ(model, reference_tensors, swap_cases):
    t = reference_tensors
    with torch.no_grad():
        source = model.prepare_source(t["source"])
        soft = model.swap(source, t["target"], [1, 2])
        hard = model.swap(source, t["target"], [1, 2], hard=True)
        from_source = model.swap(source, t["target"], [1, 2], use_source_segmentation=True)
        every_part = model.swap(source, t["target"], list(range(1, 11)), hard=True)
        background = model.swap(source, t["target"], [0], hard=True)
        target_only = model.reconstruction_module.decode(model.reconstruction_module.encode(t["target"]))
    assert (soft - hard).abs().max() > 1e-3
    assert (soft - from_source).abs().max() > 1e-3
    # Random weights give near-uniform part maps: the foreground sums to ~10/11, the background ~1/11,
    # so a hard mask of every part takes everything from the source and one of the background nothing.
    assert (every_part - background).abs().max() > 1e-3
    assert (background - target_only).abs().max() < 1e-6


def test_bf16_autocast_keeps_coordinates_in_float32(model, reference_tensors, swap_cases):
    """Under mixed precision the convolutions run in bf16; anchors, matrices, flow and
    sampling stay float32, so the swap stays close to the float32 one."""
    t = reference_tensors
    spec = swap_cases["soft_target"]
    with torch.no_grad():
        reference = model.swap(model.prepare_source(t["source"]), t["target"], spec["parts"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            seg = model.segment(t["target"])
            out = model.swap(model.prepare_source(t["source"]), t["target"], spec["parts"])
    assert seg.shift.dtype == seg.affine.dtype == seg.segmentation.dtype == torch.float32
    psnr = -10 * torch.log10(((out.float() - reference) ** 2).mean())
    assert psnr > 40, psnr

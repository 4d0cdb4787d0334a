"""copart computes what the authors' code computes: every fixture tensor, from both layouts."""

import pytest
import torch
import torch.nn.functional as F

from copart.models.checkpoint import init_from_fomm, load_model, read_checkpoint
from copart.models.config import ModelConfig
from copart.models.model import CoPartModel
from copart.models.segmentation import PartSegmentation

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


# A hard mask from the source (the authors' part_swap --hard --use_source_segmentation) has no
# tensor of its own in the fixtures; these parts put its 0.5 threshold well clear of every value
# of the source's mask sum (by 2.5e-4, 25 times the parity tolerance), with ~2/3 of it on.
HARD_SOURCE_PARTS = [0, 1, 9, 10]


def _authors_flow(t) -> torch.Tensor:
    """The authors' deformation from their own segmentations (their segment_motion, summed over
    the target's part maps), written out here: ``F(z) = sum_k Y_T^k(z) F^k(z)`` with
    ``F^k(z) = p_S^k + A_S^k (A_T^k)^-1 (z - p_T^k)`` and channel 0 the identity, on the grid
    ``x = 2 i / (W - 1) - 1``. ``(2, 32, 32, 2)``."""
    seg_t, p_t, a_t = t["seg_target.segmentation"], t["seg_target.shift"], t["seg_target.affine"]
    p_s, a_s = t["seg_source.shift"], t["seg_source.affine"]
    b, _, h, w = seg_t.shape
    x = 2 * (torch.arange(w, dtype=torch.float32) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=torch.float32) / (h - 1)) - 1
    grid = torch.cat([x.view(1, -1).repeat(h, 1).unsqueeze(2), y.view(-1, 1).repeat(1, w).unsqueeze(2)], 2)
    z = grid.view(1, 1, h, w, 2) - p_t.view(b, -1, 1, 1, 2)
    affine = torch.matmul(a_s, torch.inverse(a_t)).unsqueeze(-3).unsqueeze(-3)
    moved = torch.matmul(affine, z.unsqueeze(-1)).squeeze(-1) + p_s.view(1, -1, 1, 1, 2)
    motions = torch.cat([grid.view(1, 1, h, w, 2).repeat(b, 1, 1, 1, 1), moved], dim=1)
    return (motions * seg_t.unsqueeze(-1)).sum(dim=1)


def _authors_warp(x, deformation):
    """The authors' deform_input: flow resized to ``x`` bilinearly, grid_sample as PyTorch 1.0's."""
    if deformation.shape[1:3] != x.shape[2:]:
        deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=x.shape[2:], mode="bilinear",
                                    align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(x.expand(deformation.shape[0], *x.shape[1:]), deformation, align_corners=True)


def test_part_swap_hard_mask_from_the_source(model, reference_tensors, swap_cases):
    """--hard with the source's segmentation: the authors' part_swap thresholds the source's
    mask at 0.5 first, then warps it by the flow. A derived reference (the authors' code is not
    here to make its tensor): their source segmentation, thresholded, warped by their flow,
    blended in the generator. Each step is anchored to one of their tensors first."""
    t = reference_tensors
    flow = _authors_flow(t)
    # The flow written out above is the authors': it warps the source into their `deformed`.
    _close("reconstruction.deformed", _authors_warp(t["source"], flow), t["reconstruction.deformed"])
    seg_source = PartSegmentation(*(t[f"seg_source.{f}"] for f in ("segmentation", "shift", "affine")))
    seg_target = PartSegmentation(*(t[f"seg_target.{f}"] for f in ("segmentation", "shift", "affine")))
    rec = model.reconstruction_module

    def generate(blend_mask):  # the generator given a blend mask in the target's frame
        with torch.no_grad():
            return rec.swap(rec.encode(t["source"]), seg_source, t["target"], seg_target, blend_mask)

    # The generator given a warped source mask is the authors': their soft case, reproduced.
    spec = swap_cases["soft_source"]
    soft = t["seg_source.segmentation"][:, spec["parts"]].sum(dim=1, keepdim=True)
    _close("swap.soft_source", generate(_authors_warp(soft, flow)), t["swap.soft_source"])

    mask = t["seg_source.segmentation"][:, HARD_SOURCE_PARTS].sum(dim=1, keepdim=True)
    assert (mask - 0.5).abs().min() > 2e-4 and 0.3 < (mask > 0.5).float().mean() < 0.7
    expected = generate(_authors_warp((mask > 0.5).float(), flow))
    with torch.no_grad():
        source = model.prepare_source(t["source"])
        assert torch.equal(model.segment(t["source"]).segmentation[:, HARD_SOURCE_PARTS].sum(1, keepdim=True) > 0.5,
                           mask > 0.5)
        out = model.swap(source, t["target"], HARD_SOURCE_PARTS, hard=True, use_source_segmentation=True)
    _close("swap.hard_source (derived)", out, expected)
    # The order matters: warping first and thresholding after gives another picture.
    other = generate((_authors_warp(mask, flow) > 0.5).float())
    assert (other - expected).abs().max() > 1e-3


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

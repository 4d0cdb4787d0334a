"""Eq. 2-4 against properties and hand-computed values."""

import torch

from copart.models import motion
from copart.models.blocks import make_coordinate_grid
from copart.models.segmentation import PartSegmentation


def _seg(b=2, k=3, h=8, w=8, affine=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.softmax(torch.randn(b, k + 1, h, w, generator=g), dim=1)
    shift = torch.rand(b, k, 2, generator=g) * 2 - 1
    a = torch.eye(2).repeat(b, k, 1, 1) + 0.3 * torch.randn(b, k, 2, 2, generator=g) if affine else None
    return PartSegmentation(seg, shift, a)


def test_grid_is_the_papers():
    grid = make_coordinate_grid(3, 5)
    assert grid.shape == (3, 5, 2)
    assert torch.allclose(grid[0, :, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # x first
    assert torch.allclose(grid[:, 0, 1], torch.tensor([-1.0, 0.0, 1.0]))


def test_identity_flow_reproduces_input():
    """Exact up to float32 rounding of the grid itself; a default-argument grid_sample
    (align_corners=False) moves the image by half a pixel and blurs it."""
    import torch.nn.functional as F

    for h, w in ((17, 23), (64, 64), (256, 256)):
        x = torch.rand(2, 5, h, w)
        identity = make_coordinate_grid(h, w).expand(2, h, w, 2)
        assert (motion.warp(x, identity) - x).abs().max() < 1e-5
        assert (F.grid_sample(x, identity, align_corners=False) - x).abs().max() > 0.1
    x = torch.rand(1, 3, 32, 32)  # where the grid is exact in float32, so is the warp
    assert torch.equal(motion.warp(x, make_coordinate_grid(32, 32)[None]), x)


def test_same_frame_gives_identity_flow():
    seg = _seg()
    flow = motion.flow(seg, seg)
    assert torch.allclose(flow, make_coordinate_grid(8, 8).expand(2, 8, 8, 2), atol=1e-5)


def test_segment_motion_matches_eq2():
    src, tgt = _seg(seed=1), _seg(seed=2)
    motions = motion.segment_motion(tgt, src)
    assert motions.shape == (2, 4, 8, 8, 2)
    z = make_coordinate_grid(8, 8)
    b, k, i, j = 1, 2, 3, 6
    expected = src.shift[b, k] + src.affine[b, k] @ torch.linalg.inv(tgt.affine[b, k]) @ (z[i, j] - tgt.shift[b, k])
    assert torch.allclose(motions[b, k + 1, i, j], expected, atol=1e-5)
    assert torch.equal(motions[:, 0], z.expand(2, 8, 8, 2))  # background: identity


def test_flow_is_part_map_weighted_sum_eq3():
    src, tgt = _seg(seed=3), _seg(seed=4)
    flow = motion.flow(tgt, src)
    motions = motion.segment_motion(tgt, src)
    expected = (tgt.segmentation.unsqueeze(-1) * motions).sum(dim=1)
    assert torch.allclose(flow, expected, atol=1e-6)


def test_pure_shift_moves_content():
    """One part covering everything, moved by +0.5 in x: the warped image is the input shifted."""
    h = w = 9
    seg = torch.zeros(1, 2, h, w)
    seg[:, 1] = 1
    eye = torch.eye(2).view(1, 1, 2, 2)
    tgt = PartSegmentation(seg, torch.tensor([[[0.0, 0.0]]]), eye)
    src = PartSegmentation(seg, torch.tensor([[[0.5, 0.0]]]), eye)
    x = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    warped = motion.warp(x, motion.flow(tgt, src))
    # x = 2i/(W-1) - 1: +0.5 is two pixels at W = 9.
    assert torch.allclose(warped[0, 0, :, :6], x[0, 0, :, 2:8])


def test_visibility_eq4():
    src, tgt = _seg(seed=5), _seg(seed=6)
    v = motion.visibility(src, tgt)
    o_s = src.segmentation[:, 1:].sum(1, keepdim=True)
    o_t = tgt.segmentation[:, 1:].sum(1, keepdim=True)
    assert torch.allclose(v, 1 - o_s * (1 - o_t))


def test_inverse_2x2():
    m = torch.randn(4, 3, 2, 2) + 2 * torch.eye(2)
    assert torch.allclose(motion.inverse_2x2(m) @ m, torch.eye(2).expand(4, 3, 2, 2), atol=1e-5)

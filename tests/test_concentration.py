"""The concentration terms: the mass-weighted one (cpu-64 presets before issue 21) has the
degenerate minimum "give the figure to the background"; the foreground-split one does not."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from copart import presets
from copart.models.errors import CopartError
from copart.models.losses import Objective, concentration_loss, foreground_split_loss
from copart.models.segmentation import PartSegmentation
from copart.training.figures import render


def as_seg(maps: torch.Tensor) -> PartSegmentation:
    b, c = maps.shape[:2]
    return PartSegmentation(maps, torch.zeros(b, c - 1, 2), None)


@pytest.fixture(scope="module")
def truth():
    """Ten-limb figures at the segmentation's 32 px: (B, 32, 32) labels 0..10."""
    _, labels, _ = render("limbs10", 5, frames=6, size=64)
    return torch.from_numpy(labels[:, ::2, ::2].astype(np.int64))


def logits_of(labels: torch.Tensor, channels: int, sharpness: float = 8.0) -> torch.Tensor:
    """Logits whose softmax is the labelling (channels beyond the labels' stay empty)."""
    return F.one_hot(labels, channels).permute(0, 3, 1, 2).float() * sharpness


def test_the_true_parts_beat_one_blob_and_an_empty_foreground(truth):
    channels = 13  # ten true parts + background + two empty channels kept
    parts = torch.softmax(logits_of(truth, channels), 1)
    blob = torch.softmax(logits_of((truth > 0).long() * 3, channels), 1)  # one part over the figure
    empty = torch.softmax(logits_of(torch.zeros_like(truth), channels), 1)  # the figure given to the background
    split = float(foreground_split_loss(as_seg(parts)))
    assert split < 0.5 * float(foreground_split_loss(as_seg(blob)))
    assert split < 0.5 * float(foreground_split_loss(as_seg(empty)))
    hard_empty = F.one_hot(torch.zeros_like(truth), channels).permute(0, 3, 1, 2).float()
    assert float(foreground_split_loss(as_seg(hard_empty))) == pytest.approx(1.0)  # its largest value
    # the mass-weighted term prefers the empty foreground to the true parts: its degenerate minimum
    assert float(concentration_loss(as_seg(hard_empty))) < 0.1 * float(concentration_loss(as_seg(parts)))


def gradient(term, logits: torch.Tensor) -> torch.Tensor:
    logits = logits.clone().requires_grad_(True)
    term(as_seg(torch.softmax(logits, 1))).backward()
    return logits.grad


def test_the_foreground_split_cannot_give_the_figure_to_the_background(truth):
    start = logits_of(truth, 13, sharpness=4.0)
    new = gradient(foreground_split_loss, start)
    # Its gradient never reaches the background channel: descending it cannot give a pixel to the
    # background (the reconstruction alone decides the foreground) ...
    assert float(new[:, 0].abs().max()) < 1e-5 * float(new[:, 1:].abs().max())
    assert float(gradient(concentration_loss, start)[:, 0].abs().max()) > 1e-3 * float(new[:, 1:].abs().max())
    # ... and giving the figure to the background step by step only raises it, up to its largest value.
    figure = truth > 0
    values = []
    for t in (0, 4, 8, 12, 16):
        logits = logits_of(truth, 13)
        logits[:, 0][figure] += t
        values.append(float(foreground_split_loss(as_seg(torch.softmax(logits, 1)))))
    assert values == sorted(values) and values[-1] == pytest.approx(1.0, abs=1e-3) and values[0] < 0.3


def descend(term, logits: torch.Tensor, steps: int = 150, lr: float = 0.1) -> torch.Tensor:
    logits = logits.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        term(as_seg(torch.softmax(logits, 1))).backward()
        optimiser.step()
    return torch.softmax(logits.detach(), 1)


def test_one_blob_is_not_a_minimum_of_the_foreground_split(truth):
    channels = 11
    torch.manual_seed(0)
    start = logits_of((truth > 0).long(), channels, sharpness=4.0) + 0.1 * torch.randn(len(truth), channels, 32, 32)
    out = descend(foreground_split_loss, start, steps=200)
    figure = truth > 0
    found = out[:, 1:].argmax(1)[figure]
    largest = torch.bincount(found, minlength=channels - 1).max().item() / found.numel()
    assert largest < 0.6  # the blob was split
    assert float(foreground_split_loss(as_seg(out))) < 0.5 * float(foreground_split_loss(as_seg(torch.softmax(start, 1))))


def test_the_objective_uses_the_chosen_term_and_refuses_an_unknown_one():
    params = dict(presets.load("cpu-64-sem-10segments")["train_params"], loss="pixel")
    params["loss_weights"] = dict(params["loss_weights"], concentration=2)
    for form, term in (("mass-weighted", concentration_loss), ("foreground-split", foreground_split_loss)):
        assert Objective(dict(params, concentration=form)).concentration is term
    with pytest.raises(CopartError, match="Unknown concentration term 'kmeans'"):
        Objective(dict(params, concentration="kmeans"))


@pytest.mark.parametrize("name", ["vox-256-sem-10segments", "vox-256-sem-5segments", "vox-256-sem-15segments",
                                  "vox-256-sem-1segment", "taichi-256-sem"])
def test_the_published_presets_train_without_a_concentration_term(name):
    params = dict(presets.load(name)["train_params"], loss="pixel")
    objective = Objective(params)
    assert objective.concentration_weight == 0
    assert "concentration" not in params


def test_the_concentration_term_comes_in_after_its_start_and_rises_over_as_many_steps():
    params = dict(presets.load("cpu-64-sem-10segments")["train_params"], loss="pixel", concentration_start=100)
    objective = Objective(params)
    scales = {}
    for step in (0, 99, 100, 150, 199, 200, 5000):
        objective.at_step(step)
        scales[step] = objective.concentration_scale
    assert scales == {0: 0.0, 99: 0.0, 100: 0.0, 150: 0.5, 199: 0.99, 200: 1.0, 5000: 1.0}
    # off: the term is there (the log keeps its columns) and gives no gradient
    torch.manual_seed(0)
    from copart.models import CoPartModel, ModelConfig

    config = presets.load("cpu-64-sem-10segments")
    model = CoPartModel(ModelConfig.from_dict(config))
    frames = torch.rand(2, 3, 64, 64)
    params = dict(params, loss_weights=dict(params["loss_weights"], equivariance=0))
    for step, grows in ((0, False), (150, True)):
        objective = Objective(params)
        objective.at_step(step)
        model.zero_grad()
        losses, _ = objective(model, frames, frames.flip(0))
        losses["concentration"].backward()
        grad = sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)
        assert (grad > 0) is grows


def test_without_a_start_the_term_is_on_from_the_first_step():
    objective = Objective(dict(presets.load("cpu-64-sem-10segments")["train_params"], loss="pixel",
                               concentration_start=0))
    objective.at_step(0)
    assert objective.concentration_scale == 1.0

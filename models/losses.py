"""Training losses (paper Sec. 3.3): multi-scale perceptual (Eq. 6) or pixel
pyramid reconstruction loss, and the equivariance loss; and, not in the paper, a concentration
term on the part maps (``train_params.loss_weights.concentration``, 0 by default = the paper's
objective; ``train_params.concentration`` chooses its form), which copart's CPU presets use."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AntiAliasInterpolation2d, make_coordinate_grid
from .errors import CopartError
from .motion import inverse_2x2
from .segmentation import PartSegmentation

# The file torchvision publishes for VGG-19 (ImageNet); where it comes from is the application's
# business (copart.hub's catalog, presets/models.json: "vgg19").
VGG19_FILE = "vgg19-dcbb9e9d.pth"
# torchvision's vgg19().features: "M" is max pooling; every conv is followed by a ReLU.
_VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# Indices in ``features`` after which relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 are taken.
_VGG19_TAPS = (1, 6, 11, 20, 29)


def vgg19_path() -> Path:
    """Where PyTorch's hub cache keeps the VGG-19 file (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


class Vgg19(nn.Module):
    """VGG-19's 16 convolutions as torchvision names them (``features.N``), with
    ImageNet normalisation; returns relu1_1 ... relu5_1 of an image in [0, 1]."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in _VGG19_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = (x - self.mean) / self.std
        for i, layer in enumerate(self.features[: _VGG19_TAPS[-1] + 1]):
            x = layer(x)
            if i in _VGG19_TAPS:
                out.append(x)
        return out

    @classmethod
    def pretrained(cls, path=None) -> "Vgg19":
        """VGG-19 with torchvision's ImageNet weights from ``path`` (default: :func:`vgg19_path`, in
        PyTorch's hub cache). Nothing is downloaded here: the application fetches the file
        (``copart models pull vgg19``); one clear error when it is not there."""
        path = Path(path) if path is not None else vgg19_path()
        if not path.is_file():
            raise CopartError(
                f"The perceptual loss needs VGG-19's weights, {VGG19_FILE}, which are not in {path.parent}: "
                f"put torchvision's file of that name there, or train with the pixel-pyramid loss "
                f"instead (train_params.loss: pixel).",
                topic="pixel-loss",
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CopartError(f"{path} is not a readable VGG-19 weight file ({exc}); delete it and try again.") from None
        model = cls()
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        try:
            model.features.load_state_dict(features, strict=True)
        except RuntimeError:
            raise CopartError(f"{path} does not hold torchvision's VGG-19 weights; delete it and try again.") from None
        return model.eval()


class ImagePyramid(nn.Module):
    """Anti-aliased copies of an image at each scale: ``{scale: (B, C, H*s, W*s)}``."""

    def __init__(self, scales: Sequence[float], num_channels: int = 3):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.downs = nn.ModuleList(AntiAliasInterpolation2d(num_channels, s) for s in self.scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [down(x) for down in self.downs]


class PerceptualPyramidLoss(nn.Module):
    """Eq. 6: L1 between VGG-19 features of prediction and target at every scale,
    ``sum_s sum_i w_i |phi_i(P_s) - phi_i(T_s)|`` (mean over elements)."""

    def __init__(self, scales: Sequence[float], weights: Sequence[float], vgg: Vgg19, num_channels: int = 3):
        super().__init__()
        self.pyramid = ImagePyramid(scales, num_channels)
        self.weights = [float(w) for w in weights]
        self.vgg = vgg

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for p, t in zip(self.pyramid(prediction), self.pyramid(target)):
            for w, fp, ft in zip(self.weights, self.vgg(p), self.vgg(t)):
                if w:
                    total = total + w * (fp - ft.detach()).abs().mean()
        return total


class PixelPyramidLoss(nn.Module):
    """L1 between prediction and target at every scale of the pyramid, times ``weight``
    (the alternative that needs no download)."""

    def __init__(self, scales: Sequence[float], weight: float = 10.0, num_channels: int = 3):
        super().__init__()
        self.pyramid = ImagePyramid(scales, num_channels)
        self.weight = float(weight)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for p, t in zip(self.pyramid(prediction), self.pyramid(target)):
            total = total + self.weight * (p - t.detach()).abs().mean()
        return total


class Transform:
    """A random affine + thin-plate-spline warp of the plane, for the equivariance loss.

    ``warp_coordinates`` maps ``(B, N, 2)`` points; ``transform_frame`` resamples
    frames so that the pixel at z of the result is the input's pixel at warp(z).
    """

    def __init__(
        self,
        batch: int,
        sigma_affine: float,
        sigma_tps: Optional[float] = None,
        points_tps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ):
        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        self.theta = noise + torch.eye(2, 3).view(1, 2, 3)
        self.batch = batch
        self.tps = sigma_tps is not None and points_tps is not None
        if self.tps:
            self.control_points = make_coordinate_grid(points_tps, points_tps).view(1, -1, 2)
            self.control_params = torch.randn(batch, 1, points_tps**2, generator=generator) * sigma_tps

    @classmethod
    def from_params(cls, batch: int, params: dict, generator: Optional[torch.Generator] = None) -> "Transform":
        """From ``train_params.transform_params``."""
        return cls(batch, params["sigma_affine"], params.get("sigma_tps"), params.get("points_tps"), generator)

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        theta = self.theta.to(coordinates)
        out = coordinates @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
        if self.tps:
            control = self.control_points.to(coordinates)
            distances = (coordinates.unsqueeze(2) - control.unsqueeze(1)).abs().sum(-1)
            radial = distances**2 * torch.log(distances + 1e-6) * self.control_params.to(coordinates)
            out = out + radial.sum(dim=2, keepdim=True)
        return out

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        b, _, h, w = frame.shape
        grid = make_coordinate_grid(h, w, dtype=frame.dtype, device=frame.device).view(1, h * w, 2)
        grid = self.warp_coordinates(grid.expand(b, -1, -1)).view(b, h, w, 2)
        return F.grid_sample(frame, grid, padding_mode="border", align_corners=True)

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """``(B, N, 2, 2)``: the derivative of ``warp_coordinates`` at each point."""
        with torch.enable_grad():
            coordinates = coordinates.detach().requires_grad_(True) if not coordinates.requires_grad else coordinates
            warped = self.warp_coordinates(coordinates)
            gx = torch.autograd.grad(warped[..., 0].sum(), coordinates, create_graph=True)[0]
            gy = torch.autograd.grad(warped[..., 1].sum(), coordinates, create_graph=True)[0]
        return torch.stack([gx, gy], dim=-2)


def equivariance_loss(
    seg_target: PartSegmentation, seg_transformed: PartSegmentation, transform: Transform
) -> dict[str, torch.Tensor]:
    """The equivariance terms, unweighted.

    shift: ``|p_T - warp(p_T')|``, with T' the transformed target.
    affine: ``|I - A_T^-1 J(p_T') A_T'|``, J the transform's Jacobian at the
    transformed frame's anchors (as the authors do).
    """
    out = {"equivariance_shift": (seg_target.shift - transform.warp_coordinates(seg_transformed.shift)).abs().mean()}
    if seg_target.affine is not None and seg_transformed.affine is not None:
        moved = transform.jacobian(seg_transformed.shift) @ seg_transformed.affine
        value = inverse_2x2(seg_target.affine) @ moved
        eye = torch.eye(2, dtype=value.dtype, device=value.device).view(1, 1, 2, 2)
        out["equivariance_affine"] = (eye - value).abs().mean()
    return out


def concentration_loss(seg: PartSegmentation, eps: float = 1e-6) -> torch.Tensor:
    """How spread out the parts are (after the concentration loss of SCOPS, Hung et al. 2019):
    each part map's spatial variance around its own centre, ``sum_z |z - c_k|^2 Y_k(z) / sum_z
    Y_k(z)`` on the [-1, 1] grid, averaged over the K parts weighted by their mass (so it is the
    mean squared distance of the foreground to its part's centre, as k-means measures it). One
    part over a whole figure costs its whole spread; compact parts cost little; an empty part
    costs nothing."""
    parts = seg.segmentation[:, 1:]
    b, k, h, w = parts.shape
    grid = make_coordinate_grid(h, w, dtype=parts.dtype, device=parts.device).view(1, 1, h * w, 2)
    weights = parts.reshape(b, k, h * w)
    mass = weights.sum(dim=2)
    weights = weights / (mass.unsqueeze(-1) + eps)
    centre = (weights.unsqueeze(-1) * grid).sum(dim=2, keepdim=True)
    spread = (weights * ((grid - centre) ** 2).sum(-1)).sum(dim=2)  # (B, K)
    return ((spread * mass).sum(1) / (mass.sum(1) + eps)).mean()


def foreground_split_loss(seg: PartSegmentation, eps: float = 1e-2) -> torch.Tensor:
    """How compactly the parts split the foreground, as a within / total ratio (k-means'
    objective normalised): ``W / T`` with ``W = sum_z f(z) sum_k q_k(z) |z - c_k|^2`` (each
    foreground pixel's squared distance to its part's centre) and ``T = sum_z f(z) |z - c_f|^2``
    (the foreground's own spread), where ``f = 1 - Y_0`` is the foreground *with its gradient
    stopped* and set to 0 where it is under 1/2, and ``q_k = Y_k / (1 - Y_0)`` the parts' shares
    of it (the softmax over the part channels alone, so the background channel does not enter it).

    Unlike ``concentration_loss`` it cannot be lowered by giving pixels to the background: it
    only decides how the foreground (which the reconstruction decides) is split. It is 1 for
    one part over the whole figure, lower the more compact the parts, and 1 (its largest value)
    for an empty foreground (``eps``, in pixels times squared grid units, sets how empty)."""
    parts = seg.segmentation[:, 1:]
    b, k, h, w = parts.shape
    grid = make_coordinate_grid(h, w, dtype=parts.dtype, device=parts.device).view(1, 1, h * w, 2)
    parts = parts.reshape(b, k, h * w)
    total_mass = parts.sum(dim=1, keepdim=True)  # (B, 1, N)
    share = parts / total_mass.clamp_min(1e-12)
    foreground = total_mass.detach()
    # Only the pixels that are more foreground than background are split: on the others, sharpening
    # the parts' shares would raise the foreground (a softmax's log-sum-exp grows as it sharpens).
    foreground = foreground * (foreground > 0.5)
    weights = share * foreground  # (B, K, N): the foreground split by the parts
    mass = weights.sum(dim=2, keepdim=True)
    centre = (weights.unsqueeze(-1) * grid).sum(dim=2, keepdim=True) / (mass.unsqueeze(-1) + 1e-12)
    within = (weights * ((grid - centre) ** 2).sum(-1)).sum(dim=(1, 2))
    fg_centre = (foreground.unsqueeze(-1) * grid).sum(dim=2, keepdim=True) / (foreground.sum(2, keepdim=True).unsqueeze(-1) + 1e-12)
    total = (foreground * ((grid - fg_centre) ** 2).sum(-1)).sum(dim=(1, 2))
    return ((within + eps) / (total + eps)).mean()


# train_params.concentration: which concentration term loss_weights.concentration weighs.
CONCENTRATIONS = {"mass-weighted": concentration_loss, "foreground-split": foreground_split_loss}


# Where the perceptual loss gets VGG-19's file: a path, or a function that returns one (called only
# when the perceptual loss is chosen; the application passes one that fetches the file).
WeightsSource = Union[str, Path, Callable[[], Union[str, Path]], None]


def reconstruction_loss(train_params: dict, num_channels: int = 3, loss: Optional[str] = None,
                        vgg_weights: WeightsSource = None):
    """The reconstruction loss a configuration's ``train_params`` asks for:
    ``loss: perceptual`` (default; VGG-19 from ``vgg_weights``, default :func:`vgg19_path`) or
    ``loss: pixel``."""
    kind = loss or train_params.get("loss", "perceptual")
    scales = train_params.get("scales", [1, 0.5, 0.25, 0.125])
    weights = train_params.get("loss_weights", {})
    if kind == "perceptual":
        path = vgg_weights() if callable(vgg_weights) else vgg_weights
        return PerceptualPyramidLoss(scales, weights.get("perceptual", [10] * 5), Vgg19.pretrained(path), num_channels)
    if kind == "pixel":
        return PixelPyramidLoss(scales, weights.get("pixel", 10), num_channels)
    raise CopartError(f"Unknown reconstruction loss '{kind}'; choose 'perceptual' or 'pixel'.")


class Objective(nn.Module):
    """Everything one training step computes: reconstruction + equivariance losses, plus the
    concentration term where ``loss_weights.concentration`` is not 0 (the paper's: 0).

    ``forward(model, source, target)`` returns ``(losses, generated)``: a dict of
    weighted scalar losses and the model's outputs.
    """

    def __init__(self, train_params: dict, num_channels: int = 3, loss: Optional[str] = None,
                 vgg_weights: WeightsSource = None):
        super().__init__()
        self.train_params = train_params
        self.reconstruction = reconstruction_loss(train_params, num_channels, loss, vgg_weights)
        self.kind = loss or train_params.get("loss", "perceptual")
        self.equivariance_weight = float(train_params.get("loss_weights", {}).get("equivariance", 10))
        self.transform_params = train_params.get("transform_params", {"sigma_affine": 0.05})
        self.concentration_weight = float(train_params.get("loss_weights", {}).get("concentration", 0))
        form = train_params.get("concentration", "mass-weighted")
        if form not in CONCENTRATIONS:
            raise CopartError(f"Unknown concentration term '{form}' (train_params.concentration); choose "
                              f"{' or '.join(CONCENTRATIONS)}.")
        self.concentration = CONCENTRATIONS[form]
        # copart: the concentration term is off for the first concentration_start steps (the
        # paper's objective finds the foreground first), then rises linearly to its weight over as
        # many steps again. The training loop tells the objective its step (``at_step``).
        self.concentration_start = int(train_params.get("concentration_start", 0))
        self.concentration_scale = 1.0 if self.concentration_start == 0 else 0.0

    def at_step(self, step: int) -> None:
        """Set the concentration term's share of its weight for training step ``step`` (0-based)."""
        start = self.concentration_start
        self.concentration_scale = 1.0 if start == 0 else min(1.0, max(0.0, (step - start) / start))

    def forward(self, model, source: torch.Tensor, target: torch.Tensor, generator: Optional[torch.Generator] = None):
        generated = model(source, target)
        losses = {self.kind: self.reconstruction(generated["prediction"], target)}
        if self.concentration_weight:
            losses["concentration"] = self.concentration_scale * self.concentration_weight * (
                self.concentration(generated["seg_source"]) + self.concentration(generated["seg_target"])) / 2
        if self.equivariance_weight:
            transform = Transform.from_params(target.shape[0], self.transform_params, generator)
            transformed = transform.transform_frame(target)
            seg_transformed = model.segment(transformed)
            generated["transformed_frame"] = transformed
            generated["seg_transformed"] = seg_transformed
            for name, value in equivariance_loss(generated["seg_target"], seg_transformed, transform).items():
                losses[name] = self.equivariance_weight * value
        return losses, generated


__all__ = [
    "Vgg19",
    "vgg19_path",
    "ImagePyramid",
    "PerceptualPyramidLoss",
    "PixelPyramidLoss",
    "Transform",
    "equivariance_loss",
    "concentration_loss",
    "foreground_split_loss",
    "CONCENTRATIONS",
    "reconstruction_loss",
    "Objective",
    "VGG19_FILE",
]

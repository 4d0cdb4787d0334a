"""Building blocks shared by the segmentation and reconstruction modules.

Attribute names (``conv``, ``norm``, ``down_blocks`` ...) are those of the
published checkpoints' state dicts, so that they load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The [-1, 1] grid of the method, ``(H, W, 2)``, x first: ``x = 2 i / (W - 1) - 1``."""
    x = torch.arange(width, dtype=dtype, device=device)
    y = torch.arange(height, dtype=dtype, device=device)
    x = 2 * (x / (width - 1)) - 1
    y = 2 * (y / (height - 1)) - 1
    return torch.stack([x.view(1, -1).expand(height, width), y.view(-1, 1).expand(height, width)], dim=-1)


def gaussian_kernel(scale: float) -> torch.Tensor:
    """The normalised 2-D Gaussian used before downsampling by ``scale``, ``(k, k)``."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    coords = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-((coords - (size - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = g.view(-1, 1) * g.view(1, -1)
    return kernel / kernel.sum()


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then nearest downsampling by ``scale`` (0 < scale <= 1).

    ``(B, C, H, W) -> (B, C, floor(H * scale), floor(W * scale))``. The kernel is
    the buffer ``weight`` (it is part of the published state dicts).
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        kernel = gaussian_kernel(scale) if scale != 1 else torch.ones(1, 1)
        self.register_buffer("weight", kernel.view(1, 1, *kernel.shape).repeat(channels, 1, 1, 1))
        self.ka = kernel.shape[0] // 2
        self.kb = self.ka - 1 if kernel.shape[0] % 2 == 0 else self.ka
        self.groups = channels
        self.scale = scale
        inverse = 1 / scale
        # Nearest downsampling by an integer factor keeps every step-th pixel
        # (PyTorch's nearest index is floor(i / scale)): a strided convolution
        # computes exactly those outputs and skips the rest.
        self.step = round(inverse) if abs(inverse - round(inverse)) < 1e-9 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        weight = self.weight.to(x.dtype)
        if self.step is not None:
            out = F.conv2d(out, weight=weight, groups=self.groups, stride=self.step)
            h = math.floor(x.shape[2] * self.scale)
            w = math.floor(x.shape[3] * self.scale)
            return out[:, :, :h, :w]
        out = F.conv2d(out, weight=weight, groups=self.groups)
        return F.interpolate(out, scale_factor=(self.scale, self.scale))


class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice), same resolution."""

    def __init__(self, features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(features, affine=True)
        self.norm2 = nn.BatchNorm2d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    """Nearest upsampling x2, conv3x3, BN, ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))


class DownBlock2d(nn.Module):
    """conv3x3, BN, ReLU, average pooling /2."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """conv, BN, ReLU at the same resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


def _width(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2**level))


class Encoder(nn.Module):
    """Hourglass encoder: ``num_blocks`` down blocks; returns every level, input first."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else _width(block_expansion, max_features, i),
                _width(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: up blocks, each followed by concatenation of the skip."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            factor = 1 if i == num_blocks - 1 else 2
            blocks.append(
                UpBlock2d(factor * _width(block_expansion, max_features, i + 1), _width(block_expansion, max_features, i))
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        out = levels[-1]
        for block, skip in zip(self.up_blocks, reversed(levels[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net: ``(B, C, H, W) -> (B, block_expansion + C, H, W)``; H, W divisible by 2**num_blocks."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

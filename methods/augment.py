"""Light, seeded augmentation of support images: flips, a small rotation, colour jitter."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = True
    vflip: bool = False
    max_degrees: float = 5.0  # small: a large rotation breaks LOCO-style layout rules
    brightness: float = 0.1  # multiplicative jitter range (1 +- brightness)
    contrast: float = 0.1
    saturation: float = 0.0


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each image [n,3,H,W] about its centre by angles [n] (radians), reflecting at the borders."""
    cos, sin, zero = torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # [n,2,3]
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # [n,H,W,2]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image [n,3,H,W] in [0,1]; randomness only from `generator`."""
    n = images.shape[0]
    device = images.device
    out = images
    if config.hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(device)
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)
    if config.vflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(device)
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(-2), out)
    if config.max_degrees > 0:
        angles = _uniform(n, -config.max_degrees, config.max_degrees, generator) * math.pi / 180
        out = rotate(out, angles)
    if config.brightness > 0:
        out = out * _uniform(n, 1 - config.brightness, 1 + config.brightness, generator).to(device).view(n, 1, 1, 1)
    if config.contrast > 0:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        factor = _uniform(n, 1 - config.contrast, 1 + config.contrast, generator).to(device).view(n, 1, 1, 1)
        out = (out - mean) * factor + mean
    if config.saturation > 0:
        grey = out.mean(dim=1, keepdim=True)
        factor = _uniform(n, 1 - config.saturation, 1 + config.saturation, generator).to(device).view(n, 1, 1, 1)
        out = (out - grey) * factor + grey
    return out.clamp(0.0, 1.0)


def augmented_views(images: torch.Tensor, views: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """`views` random views of every image, stacked: [views*n,3,H,W]."""
    return torch.cat([augment(images, config, generator) for _ in range(views)])

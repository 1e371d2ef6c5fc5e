"""The one random augmentation of support images: flips, a small rotation, colour jitter; randomness only from
the generator passed in. Each method states what it needs as an `AugmentConfig` (SimpleNet's support views,
GCAD's training and statistics views, fusion's held-out views), and the one pseudo-anomaly maker
(`pseudo_anomalies`: a jittered region of the image pasted elsewhere, with its mask).

Per image, in this order: horizontal flip with probability `hflip_p`, vertical flip with `vflip_p`, rotation
by a uniform angle in +-`max_degrees` about the centre (bilinear, reflection padding), brightness x(1 +-
`brightness`), contrast about the image's mean luma x(1 +- `contrast`), saturation about each pixel's luma x(1 +-
`saturation`), clamping to [0,1] after each colour step (as torchvision's ColorJitter). Every random value is
drawn for every image whatever the config, so a config never shifts the generator's stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.common import rotation_matrices, warp


@dataclass(frozen=True)
class AugmentConfig:
    hflip_p: float = 0.0  # probability of a horizontal flip
    vflip_p: float = 0.0  # probability of a vertical flip
    max_degrees: float = 0.0  # rotation range; small: a large rotation breaks LOCO-style layout rules
    brightness: float = 0.0  # multiplicative jitter ranges (1 +- value)
    contrast: float = 0.0
    saturation: float = 0.0  # never hue: colours carry logical rules


def luma(images: torch.Tensor) -> torch.Tensor:
    """Luma of [n,3,H,W] images (ITU-R 601 weights): [n,1,H,W]."""
    return (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image [n,3,H,W] in [0,1]: same shape, in [0,1]."""
    n = len(images)

    def draw(spread: float) -> torch.Tensor:  # [n] uniform in [-spread, spread]
        return spread * (2 * torch.rand(n, generator=generator) - 1)

    def per_image(values: torch.Tensor) -> torch.Tensor:  # [n] -> [n,1,1,1] beside the images
        return values.to(images.device).view(n, 1, 1, 1)

    hflip = per_image(torch.rand(n, generator=generator) < config.hflip_p)
    vflip = per_image(torch.rand(n, generator=generator) < config.vflip_p)
    angles = torch.deg2rad(draw(config.max_degrees))
    brightness, contrast, saturation = (per_image(1 + draw(s)).to(images)
                                        for s in (config.brightness, config.contrast, config.saturation))
    out = torch.where(hflip, images.flip(-1), images)
    out = torch.where(vflip, out.flip(-2), out)
    out = (warp(out, rotation_matrices(angles)) * brightness).clamp(0, 1)
    mean_luma = luma(out).mean(dim=(2, 3), keepdim=True)  # [n,1,1,1]
    out = ((out - mean_luma) * contrast + mean_luma).clamp(0, 1)
    grey = luma(out)
    return ((out - grey) * saturation + grey).clamp(0, 1)


def augmented_views(images: torch.Tensor, count: int, config: AugmentConfig,
                    generator: torch.Generator) -> torch.Tensor:
    """`count` random views [count,3,H,W] of images [k,3,H,W], cycling through the images (view i is of image
    i mod k)."""
    return augment(images[torch.arange(count, device=images.device) % len(images)], config, generator)


@dataclass(frozen=True)
class PseudoAnomalyConfig:
    """A CutPaste-style local irregularity (Li et al., CVPR 2021; BGAD's RPAG pastes augmented regions likewise):
    a rectangle of `min_area`..`max_area` of the image, aspect ratio up to `max_aspect`, cut from one place of
    the image, changed by `jitter` (the shared `augment`), pasted at another place."""

    min_area: float = 0.02
    max_area: float = 0.08
    max_aspect: float = 3.0
    jitter: AugmentConfig = AugmentConfig(max_degrees=45.0, brightness=0.3, contrast=0.3, saturation=0.5)


def pseudo_anomalies(images: torch.Tensor, config: PseudoAnomalyConfig,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image [n,3,H,W] in [0,1] with one pasted irregularity: (images [n,3,H,W], masks [n,H,W] in {0,1})."""
    n, _, height, width = images.shape
    areas = config.min_area + (config.max_area - config.min_area) * torch.rand(n, generator=generator)
    aspects = torch.exp((2 * torch.rand(n, generator=generator) - 1) * torch.log(torch.tensor(config.max_aspect)))
    corners = torch.rand(n, 4, generator=generator)  # source (y, x) and target (y, x), as fractions of the room left
    jittered = augment(images, config.jitter, generator)
    out, masks = images.clone(), images.new_zeros(n, height, width)
    for i in range(n):
        h = max(1, min(height, round(float(torch.sqrt(areas[i] * aspects[i]) * height))))
        w = max(1, min(width, round(float(torch.sqrt(areas[i] / aspects[i]) * width))))
        sy, sx, ty, tx = (int(c * (room + 1)) for c, room in
                          zip(corners[i].tolist(), (height - h, width - w, height - h, width - w)))
        sy, sx, ty, tx = min(sy, height - h), min(sx, width - w), min(ty, height - h), min(tx, width - w)
        out[i, :, ty:ty + h, tx:tx + w] = jittered[i, :, sy:sy + h, sx:sx + w]
        masks[i, ty:ty + h, tx:tx + w] = 1
    return out, masks

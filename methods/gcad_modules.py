"""The networks of GCAD (`methods/gcad.py`): local regressor / distilled descriptor, bottlenecked global
encoder E_glo, distillation head U and the paper's U-Net-like R_glo.

Bergmann et al., IJCV 2022 (no official code; docs/REFERENCE.md, section "GCAD"). Every network takes images
normalised by `normalise_images` and returns maps of stride 2**n_down relative to its input (R_loc: the E_loc grid,
n_down = 3, 32x32 at 256 px; E_glo and R_glo: the global grid, e.g. 16x16 from a 128 px copy of the image in the
offline preset).

Departures from the paper, each with its reason:
- The sizes (channel widths, depth 5, leaky ReLU slope 0.05) are ours: the paper gives only d_loc, d_glo and g.
- No normalisation layers: with k <= 8 images, batch statistics would be noisy and differ between training and scoring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.05  # our choice: leaky ReLU keeps units alive over a few hundred steps


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """Images in [0,1] -> roughly zero-mean, unit-scale network input."""
    return (images - 0.5) / 0.25


def conv(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv (zero padding kernel // 2) + leaky ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2), nn.LeakyReLU(NEGATIVE_SLOPE))


def local_receptive_field(n_down: int) -> int:
    """Receptive field (pixels per side) of `LocalRegressor(n_down=...)`: n_down stride-2 3x3 convs, a 3x3, a 1x1."""
    field, jump = 1, 1
    for _ in range(n_down):  # 3x3 stride 2
        field, jump = field + 2 * jump, jump * 2
    return field + 2 * jump  # the stride-1 3x3 conv; the 1x1 adds nothing


class LocalRegressor(nn.Module):
    """A fully convolutional net with a restricted receptive field (`local_receptive_field(n_down)`, 31 px
    for n_down = 3): R_loc, and, trained by distillation, the dense descriptor E_loc."""

    def __init__(self, out_channels: int, width: int, n_down: int) -> None:
        super().__init__()
        widths = [max(8, width // 2 ** (n_down - 1 - i)) for i in range(n_down)]  # e.g. 16, 32, 64
        layers, c_in = [], 3
        for c_out in widths:
            layers.append(conv(c_in, c_out, stride=2))
            c_in = c_out
        layers += [conv(c_in, 2 * width), nn.Conv2d(2 * width, out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[b,3,H,W] -> [b,out,H/2**n_down,W/2**n_down]."""
        return self.net(images)


def _encoder(width: int, depth: int) -> nn.ModuleList:
    """`depth` stride-2 conv levels with channels width/4, width/2, width, width, ... (no max-pool)."""
    widths = [max(8, width // 4), max(8, width // 2)] + [width] * (depth - 2)
    levels, c_in = [], 3
    for c_out in widths[:depth]:
        levels.append(conv(c_in, c_out, stride=2))
        c_in = c_out
    return nn.ModuleList(levels)


def _run_encoder(levels: nn.ModuleList, images: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every level: [b,C_i,H/2**(i+1),W/2**(i+1)] for i = 0..depth-1."""
    outputs, x = [], images
    for level in levels:
        x = level(x)
        outputs.append(x)
    return outputs


class GlobalEncoder(nn.Module):
    """E_glo: strided convs -> a `bottleneck`-dimensional vector (the only path) -> a d_glo map on the grid."""

    def __init__(self, d_glo: int, bottleneck: int, width: int, depth: int = 5, pooled: int = 4) -> None:
        super().__init__()
        self.width, self.pooled = width, pooled
        self.encoder = _encoder(width, depth)
        self.to_code = nn.Linear(width * pooled * pooled, bottleneck)
        self.from_code = nn.Sequential(nn.Linear(bottleneck, width * pooled * pooled), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.stages = nn.ModuleList(conv(width, width) for _ in range(3))
        self.head = nn.Conv2d(width, d_glo, 3, padding=1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[b,3,H,W] -> the global code [b,bottleneck]."""
        x = _run_encoder(self.encoder, images)[-1]
        x = F.adaptive_avg_pool2d(x, self.pooled)  # [b,width,pooled,pooled] whatever the input size
        return self.to_code(x.flatten(1))

    def decode(self, code: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The code [b,bottleneck] -> [b,d_glo,*grid], upsampling through grid/4, grid/2, grid."""
        x = self.from_code(code).view(-1, self.width, self.pooled, self.pooled)
        for shift, stage in zip((2, 1, 0), self.stages):
            size = (max(1, grid[0] >> shift), max(1, grid[1] >> shift))
            x = stage(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.head(x)

    def forward(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[b,3,H,W] -> [b,d_glo,*grid]."""
        return self.decode(self.encode(images), grid)


class DistillationHead(nn.Module):
    """U: E_glo's map [b,d_glo,h,w] -> two 3x3 convs -> bilinear upsampling to the E_loc grid -> 1x1 conv
    -> a prediction of E_loc [b,d_loc,*size] (loss L_kd). The convs run on the coarse grid to save time."""

    def __init__(self, d_glo: int, d_loc: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(d_glo, width), conv(width, width))
        self.head = nn.Conv2d(width, d_loc, 1)

    def forward(self, global_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.body(global_map)
        if x.shape[-2:] != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.head(x)


class UNetRegressor(nn.Module):
    """The paper's R_glo: an unconstrained U-Net-like regressor, encoder to stride 2**depth, decoder back to
    the grid with concatenated skip connections from the encoder levels of the image."""

    def __init__(self, out_channels: int, width: int, n_down: int, depth: int = 5) -> None:
        super().__init__()
        self.n_down = n_down
        self.encoder = _encoder(width, depth)
        enc = [level[0].out_channels for level in self.encoder]
        skip_levels = range(depth - 2, n_down - 2, -1)  # encoder levels from stride 2**(depth-1) up to the output's
        self.decoder = nn.ModuleList(conv(enc[-1] if i == depth - 2 else width, width) for i in skip_levels)
        self.fuse = nn.ModuleList(conv(width + enc[i], width) for i in skip_levels)
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[b,3,H,W] -> [b,out,H/2**n_down,W/2**n_down]."""
        skips = _run_encoder(self.encoder, images)
        x = skips[-1]
        for up, fuse, skip in zip(self.decoder, self.fuse, reversed(skips[self.n_down - 1:-1])):
            x = up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            x = fuse(torch.cat([x, skip], dim=1))
        return self.head(x)

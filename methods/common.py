"""Small parts shared by every method: input normalisation, the affine warp, local aggregation of feature maps,
nearest neighbours, map smoothing, torch's CPU thread count for a block, network initialisation from the cell's
generator."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the one copy of ImageNet's statistics (torchvision / timm weights)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalise(nn.Module):
    """(images - mean) / std per channel, with the statistics that come with a network's weights (buffers)."""

    def __init__(self, mean: tuple[float, ...] | torch.Tensor, std: tuple[float, ...] | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).detach().clone().view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).detach().clone().view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def warp(maps: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample maps [b,C,h,w] at the positions the affine matrices theta [b,2,3] give (normalised coordinates,
    bilinear, reflection padding): the one affine warp of augmentation, RegAD's STNs and their inverses."""
    grid = F.affine_grid(theta.to(maps), list(maps.shape), align_corners=False)  # [b,h,w,2]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Affine matrices [n,2,3] rotating about the centre by angles [n] (radians)."""
    cos, sin, zero = torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


def aggregate_local(maps: list[torch.Tensor], patch_size: int = 3, count_include_pad: bool = False) -> torch.Tensor:
    """Local features (GCAD's grid, clip_logic's offline tower, PatchCore as anomalib computes it): average each
    level over a patch_size neighbourhood (`count_include_pad`: whether the zero padding at the border counts in the
    average), resize every level to the first level's grid (bilinear) and concatenate channels raw:
    [b, sum C_i, h, w]."""
    height, width = maps[0].shape[-2:]
    pooled = []
    for level in maps:
        level = F.avg_pool2d(level, patch_size, stride=1, padding=patch_size // 2, count_include_pad=count_include_pad)
        if level.shape[-2:] != (height, width):
            level = F.interpolate(level, size=(height, width), mode="bilinear", align_corners=False)
        pooled.append(level)
    return torch.cat(pooled, dim=1)


def project_neighbourhoods(level: torch.Tensor, patch_size: int, dim: int, chunk: int = 8) -> torch.Tensor:
    """Each position's zero-padded patch_size x patch_size neighbourhood of a map [b,C,h,w], read as one vector of
    C*p*p values ordered (channel, row, column), averaged down (or repeated up) to `dim` values by 1-D adaptive
    average pooling (the padded zeros count): [b, dim, h, w]. Runs `chunk` images at a time to bound the unfolded
    memory."""
    b, c, h, w = level.shape
    padding = patch_size // 2

    def unfold_and_pool(x: torch.Tensor) -> torch.Tensor:  # [n,C,h,w] -> [n, dim, h*w]
        columns = F.unfold(x, patch_size, padding=padding)  # [n, C*p*p, h*w]
        # pooled along the vector axis only (each position is a bin of its own): no transpose of the columns
        return F.adaptive_avg_pool2d(columns.unsqueeze(1), (dim, h * w)).squeeze(1)

    projected = torch.cat([unfold_and_pool(level[i:i + chunk]) for i in range(0, b, chunk)])
    return projected.view(b, dim, h, w)


def aggregate_official(maps: list[torch.Tensor], patch_size: int = 3, pretrain_dim: int = 1024,
                       target_dim: int = 1024) -> torch.Tensor:
    """PatchCore's local features as its official code computes them (amazon-science/patchcore-inspection):
    every level's zero-padded neighbourhood vector projected to `pretrain_dim` values (`project_neighbourhoods`),
    deeper levels resized bilinearly to the first level's grid, then the levels' vectors joined level by level
    and pooled once more by 1-D adaptive average pooling to `target_dim` values: [b, target_dim, h, w].

    With equal-length level vectors the last pooling gives each level the same share of the output (with two
    levels and target_dim = pretrain_dim, each level's vector is halved by averaging neighbouring pairs), so a
    level's weight in a distance no longer grows with its channel count. The official code resizes the unfolded
    C*p*p maps before projecting; projecting first is the same (pooling over values and bilinear resizing over
    positions are linear maps on different axes, so they commute) and resizes fewer channels."""
    height, width = maps[0].shape[-2:]
    levels = []
    for level in maps:
        level = project_neighbourhoods(level, patch_size, pretrain_dim)
        if level.shape[-2:] != (height, width):
            level = F.interpolate(level, size=(height, width), mode="bilinear", align_corners=False)
        levels.append(level)
    joined = torch.cat(levels, dim=1)  # [b, L*pretrain_dim, h, w], level-major as the official stack + reshape
    b = joined.shape[0]
    pooled = F.adaptive_avg_pool2d(joined.view(b, 1, joined.shape[1], height * width), (target_dim, height * width))
    return pooled.view(b, target_dim, height, width)


def flatten_patches(features: torch.Tensor) -> torch.Tensor:
    """[b,C,h,w] -> [b*h*w, C], one row per patch."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def nearest_distances(queries: torch.Tensor, memory: torch.Tensor, n: int = 1, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distances [q,n] of each query row [q,C] to its n nearest memory rows [m,C], ascending (n at most
    m). Squared distances come from one matrix product per chunk of queries (|q|^2 - 2 q.m + |m|^2, as cdist's
    matrix-product path computes them); the square root is taken of the n kept only."""
    n = min(n, len(memory))
    squared_memory = memory.square().sum(dim=1)
    out = []
    for start in range(0, len(queries), chunk):
        rows = queries[start:start + chunk]
        partial = torch.addmm(squared_memory, rows, memory.T, alpha=-2)  # |m|^2 - 2 q.m
        nearest = partial.amin(dim=1, keepdim=True) if n == 1 else partial.topk(n, dim=1, largest=False).values
        out.append((nearest + rows.square().sum(dim=1, keepdim=True)).clamp_min(0).sqrt())
    return torch.cat(out)


def nearest_distance(queries: torch.Tensor, memory: torch.Tensor, chunk: int = 4096, k: int = 1) -> torch.Tensor:
    """Euclidean distance of each query row [n,C] to its nearest memory row [m,C] (mean over the k nearest)."""
    return nearest_distances(queries, memory, k, chunk).mean(dim=1)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 1-D Gaussian of `sigma`, 2*ceil(4 sigma)+1 taps."""
    radius = math.ceil(4 * sigma)
    coords = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [b,H,W] maps with a Gaussian of the given sigma (kernel 2*ceil(4 sigma)+1, reflect padding)."""
    if sigma <= 0:
        return maps
    kernel = _gaussian_kernel(sigma, maps.dtype, maps.device)
    radius = len(kernel) // 2
    x = maps.unsqueeze(1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def _axis_operator(length: int, size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[length, size]: row i is the unit vector e_i linearly upsampled to `size` (align_corners=False, as
    bilinear upsampling along one axis), then blurred with the Gaussian of `sigma` (reflect padding)."""
    upsampled = F.interpolate(torch.eye(length, dtype=dtype, device=device).unsqueeze(1), size=size, mode="linear",
                              align_corners=False)  # [length, 1, size]
    if sigma > 0:
        kernel = _gaussian_kernel(sigma, dtype, device)
        radius = len(kernel) // 2
        upsampled = F.conv1d(F.pad(upsampled, (radius, radius), mode="reflect"), kernel.view(1, 1, -1))
    return upsampled.squeeze(1)


def upsample_and_blur(patch_scores: torch.Tensor, size: tuple[int, int], sigma: float = 4.0) -> torch.Tensor:
    """Patch scores [b,h,w] -> anomaly maps [b,H,W]: bilinear upsampling then Gaussian blur (reflect padding).

    Both steps are linear and act on each axis separately, so the map is R^T P C with R [h,H] and C [w,W] the
    two axes' operators: two small matrix products per map instead of an upsampled map blurred by convolution
    (the same map, float rounding aside)."""
    h, w = patch_scores.shape[-2:]
    rows = _axis_operator(h, size[0], sigma, patch_scores.dtype, patch_scores.device)
    columns = _axis_operator(w, size[1], sigma, patch_scores.dtype, patch_scores.device)
    return rows.T @ patch_scores @ columns


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run torch's CPU ops on `count` threads inside the block (None: leave the setting alone)."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def seeded_from(generator: torch.Generator) -> Iterator[None]:
    """Inside the block torch's global RNG is seeded by one draw from `generator` (the cell's), and its state
    outside is restored: for code that draws from the global RNG, such as default layer initialisation."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # networks are built on the CPU, then moved
        torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's are not forked, so left alone
        yield


PRECISIONS = ("fp32", "auto")


def autocast_dtype(device: torch.device, precision: str = "fp32") -> torch.dtype | None:
    """The dtype frozen networks run in under autocast: on CUDA with precision `auto`, bfloat16 where the GPU
    supports it, else float16; None (float32, autocast off) on other devices or with precision `fp32`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def mixed_precision(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast on `device` in `dtype` (see `autocast_dtype`); disabled when dtype is None."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)

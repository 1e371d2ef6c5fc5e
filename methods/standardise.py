"""The one z-standardiser: mean and standard deviation (ddof 0, as numpy's default and PUAD's) of values on
normal data, applied as (x - mean) / scale (fusion's held-out scale: ddof 1, the sample standard deviation of a
few held-out values).

Used by fusion (each member's held-out scores and maps), clip_logic (its three terms on held-out normals) and
GCAD (teacher features per channel, and each branch's map on augmented support views).
scale = max(std, relative_floor * |mean|); where that is not above 1e-8 * max(1, |mean|) (constant values)
the scale is 1, so the values are only shifted (no division by ~0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Standardiser:
    """mean, scale: tensors shaped like the values with the reduced dimensions kept (size 1)."""

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, values: torch.Tensor, dim: int | tuple[int, ...] | None = None,
            relative_floor: float = 0.0, ddof: int = 0) -> "Standardiser":
        """Statistics of `values` over `dim` (None: all values), in the values' dtype; `ddof` 1: the sample
        standard deviation (ddof 0 where there is a single value)."""
        dims = tuple(range(values.dim())) if dim is None else dim
        mean = values.mean(dim=dims, keepdim=True)
        count = values.numel() // mean.numel()
        std = values.std(dim=dims, correction=ddof if count > ddof else 0, keepdim=True)
        scale = cls(mean, std).floored(relative_floor).scale
        constant = scale <= 1e-8 * mean.abs().clamp_min(1.0)
        return cls(mean, torch.where(constant, torch.ones_like(scale), scale))

    def floored(self, relative_floor: float) -> "Standardiser":
        """The same mean, the scale at least `relative_floor` x |mean|."""
        return Standardiser(self.mean, torch.maximum(self.scale, relative_floor * self.mean.abs()))

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """(values - mean) / scale in the values' dtype, broadcast over the reduced dimensions."""
        return (values - self.mean.to(values)) / self.scale.to(values)

    def facts(self) -> dict[str, float | list[float]]:
        """mean and scale as plain numbers (lists when there are several), for `info()`."""
        def plain(t: torch.Tensor) -> float | list[float]:
            return float(t) if t.numel() == 1 else [float(v) for v in t.flatten()]
        return {"mean": plain(self.mean), "std": plain(self.scale)}

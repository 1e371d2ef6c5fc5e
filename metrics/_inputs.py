"""Input conversion and checks shared by the metric modules (numpy arrays or torch tensors in)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _np(x: Any) -> np.ndarray:
    """Convert a numpy array / torch tensor / sequence to a numpy array."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_map(m: np.ndarray, name: str) -> np.ndarray:
    if m.ndim != 2:
        raise ValueError(f"{name} must be 2-D [H, W], got shape {m.shape}")
    if np.isnan(m).any():
        raise ValueError(f"{name} contains NaN")
    return m


def _pairs(masks: Sequence[Any], maps: Sequence[Any], masks_name: str = "masks") -> list[tuple[Any, np.ndarray]]:
    masks, maps = list(masks), list(maps)
    if len(maps) == 0:
        raise ValueError("maps is empty")
    if len(masks) != len(maps):
        raise ValueError(f"{masks_name} has {len(masks)} images but maps has {len(maps)}")
    return [(k, _check_map(_np(m), f"maps[{i}]")) for i, (k, m) in enumerate(zip(masks, maps))]


def _mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """`mask` as an array, checked to have its map's `shape`."""
    k = _np(mask)
    shape = tuple(shape)
    if k.shape != shape:
        raise ValueError(f"{name} has shape {k.shape} but its map has shape {shape}; "
                         "resize the map to mask resolution first")
    return k


def _check_limit(limit: float, name: str) -> float:
    limit = float(limit)
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {limit}")
    return limit

"""Typed records every dataset reader yields: a `Category` of sorted paths and its `TestItem`s."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DefectSpec:
    """One entry of LOCO's `defects_config.json`: how sPRO saturates for one defect type."""

    name: str
    pixel_value: int
    saturation_threshold: float
    relative_saturation: bool


@dataclass(frozen=True)
class TestItem:
    """One test image with its ground truth.

    `defect` is the folder it came from (`good`, `logical_anomalies`, `crack`, ...), `kind` is
    `logical` / `structural` for LOCO anomalies and None otherwise (good images, MVTec, folder).
    `mask_paths` may hold several masks (LOCO: 000.png, 001.png, ...); empty for good images or
    when no mask exists.
    """

    name: str  # stable id, e.g. "logical_anomalies/003"
    path: Path
    defect: str
    label: int  # 0 = normal, 1 = anomalous
    kind: str | None = None
    mask_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Category:
    """One category of a dataset on disk, whatever its layout."""

    name: str
    root: Path
    format: str  # loco | mvtec | folder
    train_good: tuple[Path, ...]  # sorted by file name: the support pool
    validation_good: tuple[Path, ...]
    test: tuple[TestItem, ...]
    defects: tuple[DefectSpec, ...] = field(default=())

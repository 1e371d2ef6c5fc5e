"""Every metric of one run cell, from a category's ground truth and a method's scores and maps."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

import metrics as ev
from runfolder.schema import LOGICAL, STRUCTURAL
from submission.datasets.images import load_mask
from submission.datasets.records import Category, TestItem


@dataclass(frozen=True)
class GroundTruth:
    """Labels, kinds and masks of a category's test items, loaded once per run.

    masks[i] is a list of uint8 [H_i,W_i] masks at the resolution on disk (empty for good images),
    or None for the whole category when some anomalous image has no mask (pixel metrics then stay empty).
    """

    items: tuple[TestItem, ...]
    labels: np.ndarray  # [n] 0/1
    kinds: tuple[str | None, ...]
    sizes: tuple[tuple[int, int], ...]  # original (H, W) per item
    masks: tuple[list[np.ndarray], ...] | None
    defects: dict[int, tuple[float, bool]]

    @cached_property
    def pixel_truth(self) -> ev.PixelTruth | None:
        """The masks prepared for the pixel metrics (`metrics.prepare_truth`), once per category and run: every
        cell and method scores its maps against the same anomalous pixels, components and sPRO regions."""
        if self.masks is None:
            return None
        return ev.prepare_truth(self.masks, self.sizes, self.defects or None)


def load_ground_truth(category: Category, sizes: list[tuple[int, int]]) -> GroundTruth:
    """Ground truth of a category; each mask is checked against its image's size on disk."""
    items = category.test
    have_masks = all(item.mask_paths for item in items if item.label == 1) and any(item.label for item in items)
    masks = None
    if have_masks:
        masks = tuple([load_mask(path, size) for path in item.mask_paths] for item, size in zip(items, sizes))
    defects = {d.pixel_value: (d.saturation_threshold, d.relative_saturation) for d in category.defects}
    return GroundTruth(items, np.array([item.label for item in items]), tuple(item.kind for item in items),
                       tuple(sizes), masks, defects)


def maps_at_mask_resolution(maps: torch.Tensor, sizes: tuple[tuple[int, int], ...]) -> list[np.ndarray]:
    """Anomaly maps [n,H,W] resized (bilinear) to each image's original (H, W), as float32 arrays.

    The maps of all images of one size are resized in one call (the same numbers as one call per image)."""
    out: list[np.ndarray | None] = [None] * len(sizes)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes[:len(maps)]):
        by_size.setdefault(tuple(size), []).append(i)
    for size, index in by_size.items():
        batch = maps[index] if len(index) < len(maps) else maps
        resized = F.interpolate(batch[:, None].float(), size=size, mode="bilinear", align_corners=False)
        for i, anomaly_map in zip(index, resized[:, 0].cpu().numpy()):
            out[i] = anomaly_map
    return [m for m in out if m is not None]


def _subset(truth: GroundTruth, kind: str | None) -> np.ndarray:
    """Indices of all good items plus the anomalies of one kind (all anomalies when kind is None)."""
    return np.array([i for i, (label, k) in enumerate(zip(truth.labels, truth.kinds))
                     if label == 0 or kind is None or k == kind], dtype=int)


def image_metrics(truth: GroundTruth, scores: np.ndarray) -> dict[str, float | None]:
    """Image AUROC (all / logical / structural / mean) and F1-max of one cell."""
    out: dict[str, float | None] = {
        "image_auroc": ev.image_auroc(truth.labels, scores),
        "f1_max": ev.f1_max(truth.labels, scores),
    }
    for kind in (LOGICAL, STRUCTURAL):
        index = _subset(truth, kind)
        present = any(truth.kinds[i] == kind for i in index)
        out[f"image_auroc_{kind}"] = ev.image_auroc(truth.labels[index], scores[index]) if present else None
    parts = (out["image_auroc_logical"], out["image_auroc_structural"])
    out["image_auroc_mean"] = None if None in parts else float(np.mean(parts))
    return out


def _pixel_subsets(truth: GroundTruth) -> dict[str, np.ndarray]:
    """The image subsets AU-sPRO is reported for: every image, and all good images plus the anomalies of each
    kind present."""
    subsets = {"all": _subset(truth, None)}
    for kind in (LOGICAL, STRUCTURAL):
        index = _subset(truth, kind)
        if any(truth.kinds[i] == kind for i in index):
            subsets[kind] = index
    return subsets


def pixel_metrics(truth: GroundTruth, maps: list[np.ndarray], device: torch.device | str | None = None
                  ) -> dict[str, float | None]:
    """Pixel AUROC, AUPRO (FPR 0.3) and AU-sPRO (FPR 0.05; all / logical / structural) of one cell, from one
    sort of the normal pixels (`metrics.pixel_scores`, against the category's prepared masks); `device`: where the
    sorts run (None: numpy on the CPU)."""
    keys = ("pixel_auroc", "aupro_0.3", "auspro_0.05", "auspro_logical_0.05", "auspro_structural_0.05")
    out: dict[str, float | None] = dict.fromkeys(keys)
    if truth.pixel_truth is None:
        return out
    scores = ev.pixel_scores(truth.pixel_truth, maps, pro_limits=(0.3,), spro_limits=(0.05,),
                             subsets=_pixel_subsets(truth), device=device)
    out["pixel_auroc"] = scores.pixel_auroc
    out["aupro_0.3"] = scores.aupro[0.3]
    for name, key in (("all", "auspro_0.05"), (LOGICAL, "auspro_logical_0.05"), (STRUCTURAL, "auspro_structural_0.05")):
        if name in scores.auspro:
            out[key] = scores.auspro[name][0.05]
    return out

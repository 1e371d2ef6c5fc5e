"""The `--anomaly-shots m` track: which labelled anomalies a cell draws from its category's test anomalies, the
checks before any cell runs, and the cell's test set without them.

The draw (seeded, documented, nested over m): the category's anomalous test items, in the category's order
(sorted by file name), are split into strata — their kind (`logical` / `structural`) where the layout has kinds
(LOCO, the procedural dataset), else their defect folder (MVTec AD, the folder layout). A `torch.Generator`
seeded with the cell's seed draws `randperm(number of strata)` (the order the strata are visited in, strata
sorted by name first), then one `randperm` per stratum in that order. The m anomalies are taken in turns: the
first of each stratum's permutation, then the second of each, ..., passing over a stratum that has run out.
So m=2 on LOCO holds out one logical and one structural anomaly, and m=1 is a prefix of m=2.

The draw depends only on the category's test anomalies, the seed and m, not on k: every k of one seed holds out
the same images, so a method's F1-vs-k curve (AUFC) is over one test set. It never touches torch's global RNG,
so the support draw (`torch.manual_seed(seed); randperm`) is the same as without the track. The drawn images
are removed from the cell's test set for every method of the cell, recorded in manifest.json, and given (with
their masks) only to methods registered with `uses_anomalies=True`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from methods.base import LabelledAnomalies
from submission.cell_metrics import GroundTruth
from submission.datasets.records import Category, TestItem
from submission.errors import HarnessError


def anomaly_strata(items: Sequence[TestItem]) -> dict[str, list[int]]:
    """Indices of the anomalous items by stratum (kind where the layout has kinds, else defect folder), strata
    sorted by name, indices in the items' order."""
    has_kinds = any(item.kind is not None for item in items if item.label == 1)
    strata: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.label == 1:
            strata.setdefault(str(item.kind) if has_kinds else item.defect, []).append(index)
    return dict(sorted(strata.items()))


def anomaly_indices(items: Sequence[TestItem], m: int, seed: int) -> tuple[int, ...]:
    """Indices (into `items`) of the m labelled anomalies a cell with this seed draws, in drawing order (the rule
    is in the module's docstring); () for m=0."""
    if m == 0:
        return ()
    strata = list(anomaly_strata(items).values())
    available = sum(len(s) for s in strata)
    if m > available:
        raise HarnessError(f"--anomaly-shots {m}: only {available} anomalous test images to draw from")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(strata), generator=generator).tolist()
    queues = [[strata[s][i] for i in torch.randperm(len(strata[s]), generator=generator).tolist()] for s in order]
    drawn: list[int] = []
    for turn in range(max(len(q) for q in queues)):
        drawn += [queue[turn] for queue in queues if turn < len(queue)]
    return tuple(drawn[:m])


def check_anomaly_shots(categories: Sequence[Category], m: int) -> None:
    """Before any cell: every category can give m labelled anomalies, with masks, and keeps at least one anomaly
    in its test set; otherwise a one-line `HarnessError`. Nothing to check for m=0."""
    if m == 0:
        return
    for category in categories:
        anomalies = [item for item in category.test if item.label == 1]
        if not anomalies:
            raise HarnessError(f"--anomaly-shots {m}: category {category.name!r} ({category.root}) has no anomalous "
                               "test image to draw labelled anomalies from")
        if m >= len(anomalies):
            raise HarnessError(f"--anomaly-shots {m}: category {category.name!r} has {len(anomalies)} anomalous test "
                               f"images; m must be below that (at least one anomaly stays in the test set)")
        unmasked = [item.name for item in anomalies if not item.mask_paths]
        if unmasked:
            raise HarnessError(f"--anomaly-shots {m}: category {category.name!r} has {len(unmasked)} anomalous test "
                               f"images without a mask (e.g. {unmasked[0]}); labelled anomalies need masks")


def kept_indices(count: int, held: Sequence[int]) -> list[int]:
    """Indices 0..count-1 not in `held`, in order."""
    dropped = set(held)
    return [i for i in range(count) if i not in dropped]


@dataclass(frozen=True)
class HeldOut:
    """A cell's labelled anomalies: their indices into the category's test items, their ids (manifest.json), and
    the category with them removed (the cell's test set, for every method)."""

    indices: tuple[int, ...]
    names: tuple[str, ...]
    category: Category


def hold_out(category: Category, m: int, seed: int) -> HeldOut:
    """The m labelled anomalies a cell with this seed draws from `category` and the category without them (the
    category itself for m = 0): the one place the hold-out is decided, for the worker and the failure path."""
    held = anomaly_indices(category.test, m, seed)
    return HeldOut(held, tuple(category.test[i].name for i in held), without_items(category, held))


def without_items(category: Category, held: Sequence[int]) -> Category:
    """The category with the test items at `held` removed (the cell's test set); the category itself for ()."""
    if not held:
        return category
    return replace(category, test=tuple(category.test[i] for i in kept_indices(len(category.test), held)))


def truth_subset(truth: GroundTruth, keep: Sequence[int]) -> GroundTruth:
    """The ground truth of the items at `keep` only, in that order."""
    keep = list(keep)
    masks = None if truth.masks is None else tuple(truth.masks[i] for i in keep)
    return GroundTruth(tuple(truth.items[i] for i in keep), truth.labels[keep], tuple(truth.kinds[i] for i in keep),
                       tuple(truth.sizes[i] for i in keep), masks, truth.defects)


def labelled_anomalies(images: torch.Tensor, truth: GroundTruth, held: Sequence[int]) -> LabelledAnomalies | None:
    """The held-out test images [m,3,H,W] (at the run's size) with their masks [m,H,W] in {0,1}: the union of each
    image's masks, resized to H x W by nearest neighbour; None when nothing is held out."""
    if not held:
        return None
    if truth.masks is None:
        raise HarnessError("labelled anomalies need masks, and this category has anomalous images without one")
    size = tuple(images.shape[-2:])
    masks = []
    for i in held:
        union = np.any(np.stack(truth.masks[i]) > 0, axis=0) if truth.masks[i] else np.zeros(truth.sizes[i], bool)
        mask = torch.from_numpy(union.astype(np.float32))[None, None]
        masks.append(F.interpolate(mask, size=size, mode="nearest")[0, 0])
    return LabelledAnomalies(images[list(held)].clone(), torch.stack(masks))

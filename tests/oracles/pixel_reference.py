"""Oracle for the pixel metrics: the implementation from before the one-sort path in `metrics.pixel` (kept
verbatim from the former `metrics/_reference.py`), and one cell's pixel metrics computed with it, one call per
metric and subset (the former `submission.cell_metrics._reference_pixel_metrics`).

Not used by the harness: tests/metrics and `python -m bench.pixel_metrics` check the fast path against it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from metrics._inputs import _check_limit, _mask, _np, _pairs
from runfolder.schema import LOGICAL, STRUCTURAL
from submission.cell_metrics import GroundTruth, _subset

__all__ = ["pixel_auroc", "aupro", "auspro", "cell_pixel_metrics"]


def pixel_auroc(masks: Sequence[Any], maps: Sequence[Any]) -> float | None:
    """Pixel-level ROC AUC over all pooled pixels. masks [H,W] per image (nonzero =
    anomalous), maps float [H,W] of the same shape; None if one class."""
    pairs = _pairs(masks, maps)
    y = np.concatenate([(_mask(k, m.shape, f"masks[{i}]") != 0).ravel() for i, (k, m) in enumerate(pairs)])
    if y.all() or not y.any():
        return None
    s = np.concatenate([m.ravel() for _, m in pairs])
    # Mann-Whitney: AUROC = P(positive > negative) + P(tie) / 2, counted by binary search of every
    # positive score in the sorted negatives; a value-only sort is several times faster than an argsort
    # on the tens of millions of pixels of a full-resolution LOCO category. Equal to roc_auc_score.
    negatives = np.sort(s[~y])
    positives = np.sort(s[y])
    below = np.searchsorted(negatives, positives, side="left").astype(np.float64)
    not_above = np.searchsorted(negatives, positives, side="right").astype(np.float64)
    return float((below.sum() + 0.5 * (not_above - below).sum()) / (positives.size * negatives.size))

def _overlap_curve(normal: np.ndarray, regions: list[tuple[np.ndarray, float]],
                   max_fpr: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact (FPR, mean saturated overlap) curve up to `max_fpr`, for trapezoidal integration.

    normal: scores of normal pixels; regions: (pixel scores, saturation area s) with
    overlap(t) = min(1, #{score >= t} / s). Each region pixel of within-region rank k contributes
    min(1, k/s) - min(1, (k-1)/s). The FPR only changes at normal pixels' scores, and between two of
    them the curve is vertical (no area), so the curve is read at each distinct normal score v: the
    point (FPR above v, overlap counting scores > v), then (FPR at v, overlap counting scores >= v).
    This matches evaluating every distinct threshold and needs only a value sort of the normals."""
    n_reg = len(regions)
    scores, incs = [], []
    for rs, sat in regions:
        rs = np.sort(rs)[::-1]
        incs.append(np.diff(np.minimum(1.0, np.arange(rs.size + 1) / sat)) / n_reg)
        scores.append(rs)
    region_scores = np.concatenate(scores)
    order = np.argsort(region_scores)  # ascending; region pixels are few next to the normal pixels
    region_sorted = region_scores[order]
    overlap_below = np.concatenate([[0.0], np.cumsum(np.concatenate(incs)[order])])  # overlap of scores < x
    total = overlap_below[-1]

    normal_sorted = np.sort(normal)[::-1]  # descending
    keep = min(normal_sorted.size, int(np.ceil(max_fpr * normal_sorted.size)) + 1)
    keep = int(np.searchsorted(-normal_sorted, -normal_sorted[keep - 1], side="right"))  # whole run of ties
    top = normal_sorted[:keep]
    last = np.flatnonzero(np.append(top[1:] != top[:-1], True))  # last index of each run of equal scores
    values = top[last]
    fpr_at = (last + 1) / normal.size
    fpr_above = np.concatenate([[0.0], fpr_at[:-1]])
    strict = total - overlap_below[np.searchsorted(region_sorted, values, side="right")]
    at_or_above = total - overlap_below[np.searchsorted(region_sorted, values, side="left")]
    fpr = np.concatenate([[0.0], np.column_stack([fpr_above, fpr_at]).ravel()])
    pro = np.clip(np.concatenate([[0.0], np.column_stack([strict, at_or_above]).ravel()]), 0.0, 1.0)
    if fpr[-1] >= 1.0:
        fpr, pro = np.append(fpr, 1.0), np.append(pro, 1.0)  # every region is covered at the lowest threshold
    return fpr, pro

def _area_up_to(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoid area under pro(fpr) on [0, limit], interpolated at limit, / limit."""
    j = int(np.searchsorted(fpr, limit, side="right"))
    x, y = fpr[:j], pro[:j]
    if j < fpr.size:  # fpr[j-1] <= limit < fpr[j]
        w = (limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        x = np.append(x, limit)
        y = np.append(y, pro[j - 1] + w * (pro[j] - pro[j - 1]))
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0) / limit)


def aupro(masks: Sequence[Any], maps: Sequence[Any], fpr_limit: float = 0.3) -> float | None:
    """Normalised area under the per-region-overlap (PRO) vs FPR curve up to fpr_limit
    (MVTec AD protocol; regions = 8-connected components). masks/maps [H,W] per image.
    None if there is no anomalous region or no normal pixel."""
    limit = _check_limit(fpr_limit, "fpr_limit")
    structure = np.ones((3, 3), dtype=int)
    normal, regions = [], []
    for i, (k, m) in enumerate(_pairs(masks, maps)):
        lab, n = ndimage.label(_mask(k, m.shape, f"masks[{i}]") != 0, structure=structure)
        normal.append(m[lab == 0])
        if n:
            idx = np.flatnonzero(lab)
            labs = lab.ravel()[idx]
            order = np.argsort(labs, kind="stable")
            sizes = np.bincount(labs, minlength=n + 1)[1:]
            for rs in np.split(m.ravel()[idx[order]], np.cumsum(sizes)[:-1]):
                regions.append((rs, float(rs.size)))
    normal_s = np.concatenate(normal)
    if not regions or normal_s.size == 0:
        return None
    return _area_up_to(*_overlap_curve(normal_s, regions, limit), limit)


def auspro(gt_masks: Sequence[Sequence[Any]], maps: Sequence[Any],
           defects: Mapping[int, tuple[float, bool]],
           fpr_limits: Sequence[float] = (0.01, 0.05, 0.1, 0.3, 1.0)) -> dict[float, float | None]:
    """Normalised area under the saturated-PRO (sPRO) vs FPR curve (MVTec LOCO).

    gt_masks[i]: list of [H,W] masks of image i (empty for a good image); each mask's
    nonzero pixels form ONE region whose defect type is its pixel value, looked up in
    defects[value] = (saturation_threshold, relative).  maps[i]: [H,W] float.
    FPR uses the pixels normal in all of an image's masks.  Returns {limit: value};
    values None if there are no regions or no normal pixels."""
    limits = [_check_limit(lim, "fpr_limits") for lim in fpr_limits]
    normal, regions = [], []
    for i, (mask_list, m) in enumerate(_pairs(gt_masks, maps, "gt_masks")):
        is_normal = np.ones(m.shape, dtype=bool)
        for j, k in enumerate(mask_list):
            nz = _mask(k, m.shape, f"gt_masks[{i}][{j}]") != 0
            values = np.unique(_np(k)[nz])
            if values.size == 0:
                continue  # an empty mask holds no region
            if values.size > 1:
                raise ValueError(f"gt_masks[{i}][{j}] holds several pixel values {values.tolist()}; "
                                 "expected one defect type per mask")
            value = values[0].item()
            if value not in defects:
                raise ValueError(f"gt_masks[{i}][{j}]: pixel value {value} is not in defects")
            threshold, relative = defects[value]
            area = float(nz.sum())
            sat = min(threshold * area if relative else float(threshold), area)
            if sat <= 0:
                raise ValueError(f"defects[{value}] gives a non-positive saturation area {sat}")
            regions.append((m[nz], sat))
            is_normal &= ~nz
        normal.append(m[is_normal])
    normal_s = np.concatenate(normal)
    if not regions or normal_s.size == 0:
        return {lim: None for lim in limits}
    fpr, spro = _overlap_curve(normal_s, regions, max(limits))
    return {lim: _area_up_to(fpr, spro, lim) for lim in limits}


def cell_pixel_metrics(truth: GroundTruth, maps: list[np.ndarray]) -> dict[str, float | None]:
    """`submission.cell_metrics.pixel_metrics` as it was before `metrics.pixel_scores`: the functions above, one
    call per metric and subset."""
    keys = ("pixel_auroc", "aupro_0.3", "auspro_0.05", "auspro_logical_0.05", "auspro_structural_0.05")
    out: dict[str, float | None] = dict.fromkeys(keys)
    if truth.masks is None:
        return out
    binary = [np.any(np.stack(m), axis=0) if m else np.zeros(s, dtype=bool) for m, s in zip(truth.masks, truth.sizes)]
    out["pixel_auroc"] = pixel_auroc(binary, maps)
    out["aupro_0.3"] = aupro(binary, maps, fpr_limit=0.3)
    if not truth.defects:
        return out
    everything = _subset(truth, None)
    cache: dict[tuple[int, ...], float | None] = {}  # a subset equal to the whole set is computed once
    for kind, key in ((None, "auspro_0.05"), (LOGICAL, "auspro_logical_0.05"), (STRUCTURAL, "auspro_structural_0.05")):
        index = _subset(truth, kind)
        if kind is not None and not any(truth.kinds[i] == kind for i in index):
            continue
        subset = tuple(index.tolist()) if len(index) != len(everything) else ()
        if subset not in cache:
            masks = [truth.masks[i] for i in index]
            cache[subset] = auspro(masks, [maps[i] for i in index], truth.defects, fpr_limits=(0.05,))[0.05]
        out[key] = cache[subset]
    return out

"""Resampling statistics for the leaderboard: pure functions, arrays in, numbers out, no run folders.

- `stratified_resample` / `bootstrap_replicates` / `bootstrap_ci`: a seeded bootstrap over one cell's
  test images, stratified by label (the good and the anomalous images are resampled separately, with
  replacement, so every resample keeps the cell's class counts and both metrics stay defined). The
  replicates of image AUROC and F1-max are computed for all resamples at once from per-image
  multiplicities (one sort, cumulative counts over the tied score groups: O(B·N), no Python loop over
  resamples), and equal `metrics.image_auroc` / `metrics.f1_max` on the resampled arrays.
- `percentile_interval`: the percentile interval of replicates (95 % by default).
- `paired_comparison`: the paired comparison of two methods over matching cells: a two-sided Wilcoxon
  signed-rank test (scipy.stats.wilcoxon) on the per-cell differences, and a seeded paired bootstrap of the
  mean difference over the cells (the cells, with their differences, are resampled with replacement).

Defaults: `N_RESAMPLES` = 1000 resamples, `SEED` = 0, `LEVEL` = 0.95. The resample drawn for a cell
depends only on its labels' order, the count and the seed, so cells with the same test images in the
same order (the seeds and methods of one category) get the same resamples: averaging their replicates
resamples the shared test images once, jointly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from metrics._inputs import _np

__all__ = ["N_RESAMPLES", "SEED", "LEVEL", "stratified_resample", "resample_counts", "weighted_auroc_f1",
           "bootstrap_replicates", "percentile_interval", "bootstrap_ci", "PairedComparison", "paired_comparison"]

N_RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def _labels(labels: Any) -> np.ndarray:
    y = _np(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    return y != 0


def stratified_resample(labels: Any, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Indices [n_resamples, N] of a stratified bootstrap: column j of every row is drawn, with
    replacement, from the images of image j's class, so `labels[idx[b]]` equals `labels` for every b."""
    y = _labels(labels)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    indices = np.empty((n_resamples, y.size), dtype=np.int64)
    for cls in (False, True):  # good first, then anomalous: a fixed draw order
        members = np.flatnonzero(y == cls)
        if members.size:
            indices[:, members] = members[rng.integers(0, members.size, size=(n_resamples, members.size))]
    return indices


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity [B, n] of every image in each resample of `indices` [B, N]."""
    b = indices.shape[0]
    offsets = (indices + n * np.arange(b)[:, None]).ravel()
    return np.bincount(offsets, minlength=b * n).reshape(b, n)


def weighted_auroc_f1(labels: Any, scores: Any, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image AUROC and F1-max [B] of B weighted copies of a cell, image i counted counts[b, i] times.

    AUROC = P(anomalous > good) + P(tie) / 2 (Mann-Whitney, as roc_auc_score); F1-max = max over the
    thresholds `score >= t` of 2·TP / (TP + FP + P), as `metrics.f1_max`. NaN where one class is absent."""
    y, s = _labels(labels), _np(scores).astype(np.float64)
    if s.shape != y.shape:
        raise ValueError(f"labels has {y.size} entries but scores has {s.size}")
    if np.isnan(s).any():
        raise ValueError("scores contains NaN")
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != y.size:
        raise ValueError(f"counts must be [B, {y.size}], got shape {c.shape}")
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted, c_sorted = s[order], y[order], c[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # first element of each tied group
    pos = np.add.reduceat(c_sorted * y_sorted, starts, axis=1)  # [B, G] anomalous per score group (ascending)
    neg = np.add.reduceat(c_sorted * ~y_sorted, starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    defined = (n_pos > 0) & (n_neg > 0)
    neg_below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        tp = n_pos[:, None] - (np.cumsum(pos, axis=1) - pos)  # score >= group value
        fp = n_neg[:, None] - neg_below
        f1 = np.where(tp + fp > 0, 2 * tp / (tp + fp + n_pos[:, None]), 0.0).max(axis=1)
    return np.where(defined, auroc, np.nan), np.where(defined, f1, np.nan)


def bootstrap_replicates(labels: Any, scores: Any, n_resamples: int = N_RESAMPLES,
                         seed: int = SEED) -> dict[str, np.ndarray]:
    """{"image_auroc": [B], "f1_max": [B]}: the metrics on each stratified resample of one cell."""
    y = _labels(labels)
    counts = resample_counts(stratified_resample(y, n_resamples, seed), y.size)
    auroc, f1 = weighted_auroc_f1(y, scores, counts)
    return {"image_auroc": auroc, "f1_max": f1}


def percentile_interval(replicates: Any, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval (the (1-level)/2 and (1+level)/2 quantiles) of bootstrap replicates;
    (nan, nan) when any replicate is NaN (a metric that does not apply)."""
    r = _np(replicates).astype(np.float64).ravel()
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if r.size == 0 or np.isnan(r).any():
        return float("nan"), float("nan")
    low, high = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_ci(labels: Any, scores: Any, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                 level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """{"image_auroc": (low, high), "f1_max": (low, high)}: stratified percentile bootstrap intervals of a cell."""
    return {name: percentile_interval(values, level)
            for name, values in bootstrap_replicates(labels, scores, n_resamples, seed).items()}


@dataclass(frozen=True)
class PairedComparison:
    """A paired comparison over n matched cells of the differences d = A − B."""

    n: int
    mean_diff: float
    ci_low: float  # percentile interval of the mean difference, paired bootstrap over the cells
    ci_high: float
    p_value: float  # two-sided Wilcoxon signed-rank test of d (zero differences dropped)
    n_positive: int  # cells where A > B
    n_negative: int  # cells where A < B


def paired_comparison(a: Any, b: Any, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                      level: float = LEVEL) -> PairedComparison:
    """Compare the matched values a [n] and b [n] (cell i of A with cell i of B).

    Wilcoxon signed-rank (scipy, `zero_method="wilcox"`, two-sided; its exact null distribution for small
    n without ties) on d = a − b; p = 1 when every difference is 0 (no evidence of any difference), NaN
    when n = 0. The interval of mean(d) is a percentile bootstrap resampling the n cells with
    replacement (`n_resamples`, `seed`). Cells of one run share test images and support draws, so they
    are not fully independent: read the p-value as a screen, not an exact error rate. With n cells and no
    ties the smallest two-sided p is 2 / 2**n: below 6 cells no difference can reach p < 0.05."""
    x, z = _np(a).astype(np.float64).ravel(), _np(b).astype(np.float64).ravel()
    if x.shape != z.shape:
        raise ValueError(f"a has {x.size} values but b has {z.size}")
    if np.isnan(x).any() or np.isnan(z).any():
        raise ValueError("a and b must not contain NaN: drop the cells where a metric does not apply first")
    d = x - z
    n = int(d.size)
    if n == 0:
        nan = float("nan")
        return PairedComparison(0, nan, nan, nan, nan, 0, 0)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    low, high = percentile_interval(means, level)
    p = 1.0 if not np.any(d != 0) else float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedComparison(n, float(d.mean()), low, high, p, int((d > 0).sum()), int((d < 0).sum()))

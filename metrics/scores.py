"""Pure metric functions for few-shot anomaly detection.

Arrays in (numpy arrays or torch tensors), numbers out, no state.  A metric that
does not apply to the given data (a single class, no anomalous region, ...)
returns ``None``; inconsistent inputs raise ``ValueError`` naming the argument.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score

from metrics._inputs import _np
from metrics.pixel import PixelScores, aupro, auspro, pixel_auroc, pixel_scores  # noqa: F401  (re-exported)

__all__ = ["image_auroc", "f1_max", "pixel_auroc", "aupro", "auspro", "pixel_scores", "PixelScores", "aufc"]


def _binary_inputs(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y, s = _np(labels), _np(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.size == 0:
        raise ValueError("labels is empty")
    if y.size != s.size:
        raise ValueError(f"labels has {y.size} entries but scores has {s.size}")
    return y != 0, s.astype(np.float64)


def image_auroc(labels: Any, scores: Any) -> float | None:
    """Image-level ROC AUC. labels [N] (nonzero = anomalous), scores [N]; None if one class."""
    y, s = _binary_inputs(labels, scores)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def f1_max(labels: Any, scores: Any) -> float | None:
    """Maximum F1 over all score thresholds. labels [N], scores [N]; None if one class."""
    y, s = _binary_inputs(labels, scores)
    if y.all() or not y.any():
        return None
    precision, recall, _ = precision_recall_curve(y, s)
    # The final point (precision 1, recall 0) has no threshold: drop it.
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def aufc(k_values: Sequence[float], mean_f1: Sequence[float]) -> tuple[float | None, float | None]:
    """Area under the F1-vs-k curve (VAND protocol) and its normalisation by
    (k_max - k_min). k_values [K], mean_f1 [K]; (None, None) with < 2 distinct k."""
    k, f = _np(k_values).astype(np.float64).ravel(), _np(mean_f1).astype(np.float64).ravel()
    if k.size == 0:
        raise ValueError("k_values is empty")
    if k.size != f.size:
        raise ValueError(f"k_values has {k.size} entries but mean_f1 has {f.size}")
    if np.unique(k).size < 2:
        return None, None
    order = np.argsort(k, kind="stable")
    area = float(auc(k[order], f[order]))
    return area, area / float(k.max() - k.min())

"""Pure anomaly-detection metrics: arrays in, numbers out, no state and no knowledge of run folders.

Imported by `submission` (per-cell metrics) and `leaderboard` (AUFC, score parts), which never import
each other.
"""
from metrics.pixel import PixelTruth, prepare_truth
from metrics.scores import PixelScores, aufc, aupro, auspro, f1_max, image_auroc, pixel_auroc, pixel_scores

__all__ = ["PixelScores", "PixelTruth", "prepare_truth", "aufc", "aupro", "auspro", "f1_max", "image_auroc",
           "pixel_auroc", "pixel_scores"]

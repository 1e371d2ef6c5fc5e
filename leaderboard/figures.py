"""The report's PNG figures: the VAND F1-vs-k curve, AUROC bars per category, anomaly-map overlays."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from leaderboard.aggregate import OVERALL


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _main_category(board: pd.DataFrame) -> str | None:
    categories = [c for c in board["category"].unique() if c != OVERALL]
    return OVERALL if len(categories) > 1 else (categories[0] if categories else None)


def plot_f1_vs_k(board: pd.DataFrame, path: Path) -> Path | None:
    """F1-max vs k per method (overall, or the only category), seed std as error bars, AUFC in the legend."""
    category = _main_category(board)
    rows = board[(board["category"] == category) & (board["k"] != "all")]
    if rows.empty:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    summaries = board[(board["category"] == category) & (board["k"] == "all")].set_index(["method", "preset"])
    for (method, preset), group in rows.groupby(["method", "preset"]):
        label = f"{method} ({preset})"
        aufc = summaries.loc[(method, preset), "aufc_norm"] if (method, preset) in summaries.index else np.nan
        if not pd.isna(aufc):
            label += f", nAUFC {aufc:.3f}"
        axis.errorbar(group["k"].astype(int), group["f1_max"], yerr=group["f1_max_std"].fillna(0), marker="o",
                      capsize=3, label=label)
    axis.set(xlabel="k (support images)", ylabel="image F1-max", title=f"F1-max vs k — {category}")
    axis.set_xticks(sorted(rows["k"].astype(int).unique()))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, path, plt)


def plot_auroc_bars(board: pd.DataFrame, path: Path) -> Path | None:
    """Per-category bars of image AUROC, logical and structural, per method (largest k)."""
    rows = board[(board["category"] != OVERALL) & (board["k"] != "all")]
    if rows.empty:
        return None
    rows = rows[rows["k"].astype(int) == rows["k"].astype(int).max()]
    plt = _pyplot()
    categories = sorted(rows["category"].unique())
    methods = sorted(rows["method"].unique())
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / len(methods)
    for axis, (column, title) in zip(axes, (("image_auroc_logical", "logical"), ("image_auroc_structural", "structural"))):
        for i, method in enumerate(methods):
            values = [rows[(rows["category"] == c) & (rows["method"] == method)][column].mean() for c in categories]
            axis.bar(np.arange(len(categories)) + i * width, np.nan_to_num(values), width, label=method)
        axis.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        axis.set_xticks(np.arange(len(categories)) + 0.4 - width / 2, categories, rotation=20, fontsize=8)
        axis.set(title=f"image AUROC, {title} (k={rows['k'].iloc[0]})", ylim=(0, 1))
    axes[0].legend(fontsize=7)
    return _save(figure, path, plt)


def worst_cases(scores: pd.DataFrame) -> dict[str, pd.Series]:
    """The highest-scoring good image (worst false positive) and lowest-scoring anomaly (worst false negative)."""
    out = {}
    good, bad = scores[scores["label"] == 0], scores[scores["label"] == 1]
    if not good.empty:
        out["worst false positive"] = good.loc[good["score"].idxmax()]
    if not bad.empty:
        out["worst false negative"] = bad.loc[bad["score"].idxmin()]
    return out


def plot_overlays(run_dir: Path, path: Path) -> Path | None:
    """Grid: per method (rows) its worst false positive and false negative, image with its anomaly map.

    Uses the largest k and first seed of each method; needs a run made with --save-maps."""
    maps_root = run_dir / "maps"
    if not maps_root.is_dir():
        return None
    config = json.loads((run_dir / "config.json").read_text())
    data_root = Path(config["data"])
    panels = []
    for variant_dir in sorted(p for p in maps_root.iterdir() if p.is_dir()):
        cells = sorted(variant_dir.iterdir(), key=lambda p: (-int(p.name[1:].split("_s")[0]), p.name))
        cell = cells[0]
        category = sorted(p.name for p in cell.iterdir())[0]
        scores = pd.read_csv(run_dir / "scores" / variant_dir.name / cell.name / f"{category}.csv")
        for title, row in worst_cases(scores).items():
            panels.append((f"{variant_dir.name} {cell.name} {category}\n{title}: {row['image']} ({row['score']:.3g})",
                           data_root / category / "test" / f"{row['image']}.png",
                           cell / category / "test" / f"{row['image']}.tiff"))
    if not panels:
        return None
    plt = _pyplot()
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, image_path, map_path) in zip(axes.flat, panels):
        anomaly_map = np.asarray(Image.open(map_path), dtype=np.float32)
        if image_path.is_file():
            axis.imshow(np.asarray(Image.open(image_path).convert("RGB").resize(anomaly_map.shape[::-1])))
        axis.imshow(anomaly_map, cmap="jet", alpha=0.45)
        axis.set_title(title, fontsize=7)
    return _save(figure, path, plt)


def _save(figure, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

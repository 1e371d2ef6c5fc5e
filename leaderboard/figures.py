"""The report's PNG figures: the VAND F1-vs-k curve, AUROC bars per category, anomaly-map overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Collection

import numpy as np
import pandas as pd
from PIL import Image

from leaderboard.aggregate import OVERALL
from runfolder.reading import read_json
from runfolder.schema import RunPaths, cell_name


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


def plot_overlays(run_dir: Path, path: Path, variants: Collection[str] | None = None,
                  every_category: bool = False) -> Path | None:
    """Grid: per method (rows) its worst false positive and false negative, image with its anomaly map.

    Uses the largest k and first seed of each method (of `variants`, method folder names; default every one),
    in its first category (every category with `every_category`); needs a run made with --save-maps. The image
    is the score CSV's `path` (relative to the dataset root, any format and extension)."""
    paths = RunPaths(Path(run_dir))
    cells = [c for c in paths.map_cells() if c[3] and (variants is None or c[0] in variants)]
    if not cells:
        return None
    data_root = Path(read_json(paths.config).get("data") or ".")
    panels = []
    for variant in sorted({c[0] for c in cells}):
        _, k, seed, categories = min((c for c in cells if c[0] == variant), key=lambda c: (-c[1], cell_name(c[1], c[2])))
        for category in categories if every_category else categories[:1]:
            scores_csv = paths.scores(variant, k, seed, category)
            if not scores_csv.is_file():
                continue
            scores = pd.read_csv(scores_csv, dtype={"image": str, "kind": str, "path": str})
            for title, row in worst_cases(scores).items():
                map_path = paths.map(variant, k, seed, category, row["image"])
                if map_path.is_file():
                    panels.append((f"{variant} {cell_name(k, seed)} {category}\n{title}: {row['image']} "
                                   f"({row['score']:.3g})", test_image(data_root, category, row), map_path))
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
        if image_path is not None and image_path.is_file():
            axis.imshow(np.asarray(Image.open(image_path).convert("RGB").resize(anomaly_map.shape[::-1])))
        axis.imshow(anomaly_map, cmap="jet", alpha=0.45)
        axis.set_title(title, fontsize=7)
    return _save(figure, path, plt)


def test_image(data_root: Path, category: str, row: pd.Series) -> Path | None:
    """The test image of a score CSV row: its `path` under the dataset root; for score CSVs written before
    that column, the file named by its id (`<defect>/<stem>`) with whatever extension it has."""
    relative = row.get("path")
    if isinstance(relative, str) and relative:
        return data_root / relative
    for folder in (data_root / category / "test", data_root / category):  # LOCO / MVTec, then the folder layout
        found = sorted(p for p in (folder / row["image"]).parent.glob(f"{Path(row['image']).name}.*") if p.is_file())
        if found:
            return found[0]
    return None


def _save(figure, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

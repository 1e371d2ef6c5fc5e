"""Image AUROC (and normal spread) of every part of a method's score (GCAD's `local` / `global` branches, fusion's member
z-scores `z_<member>`), read from a run folder's per-image score CSVs.

This is how a reader sees which branch catches logical and which structural anomalies, or which fusion
member fired; `normal_std` is the part's spread over the normal test images (for fusion's `z_<member>`,
1 when the member's held-out statistics describe unseen normals; reported, never used to fit anything).
Seeds and categories are combined as in `aggregate`: AUROC per (category, k, seed), mean
over categories within a seed for `overall`, then mean and std (ddof=1) over seeds.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from leaderboard.aggregate import OVERALL
from metrics import image_auroc
from runfolder.schema import LOCO_KINDS, LOGICAL, SCORE_COLUMNS, STRUCTURAL, RunPaths, variant_dirname

SUBSETS = (("auroc", None), ("auroc_logical", LOGICAL), ("auroc_structural", STRUCTURAL))
METRICS = (*(name for name, _ in SUBSETS), "normal_std")


def part_metrics(frame: pd.DataFrame, column: str) -> dict[str, float | None]:
    """AUROC of one score column on all test images, and on the normals plus one LOCO anomaly kind; its std
    (ddof 0) over the normal images."""
    kinds = frame["kind"].map(LOCO_KINDS)
    values = {}
    for name, kind in SUBSETS:
        keep = pd.Series(True, index=frame.index) if kind is None else (frame["label"] == 0) | (kinds == kind)
        subset = frame[keep]
        present = kind is None or (kinds[keep] == kind).any()
        values[name] = image_auroc(subset["label"], subset[column]) if present else None
    normal = frame.loc[frame["label"] == 0, column]
    values["normal_std"] = float(normal.std(ddof=0)) if len(normal) else None
    return values


def read_score_parts(run_dir: Path) -> pd.DataFrame:
    """One row per (method folder, category, k, seed, part) with its AUROCs; `score` is the whole score."""
    rows = []
    for cell, path in RunPaths(Path(run_dir)).score_files():
        frame = pd.read_csv(path, dtype={"image": str, "kind": str, "path": str})
        parts = [c for c in frame.columns if c not in SCORE_COLUMNS]  # score CSVs before `path` lack it: same parts
        if not parts:
            continue
        for part in ["score", *parts]:
            rows.append({"method": cell.variant, "category": cell.category, "k": cell.k,
                         "seed": cell.seed, "part": part, **part_metrics(frame, part)})
    return pd.DataFrame(rows, columns=["method", "category", "k", "seed", "part", *METRICS])


def aggregate_score_parts(parts: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (method, category|overall, k, part)."""
    metrics = list(METRICS)
    if parts.empty:
        return pd.DataFrame(columns=["method", "category", "k", "part", "n_seeds",
                                     *(c for m in metrics for c in (m, f"{m}_std"))])
    keys = ["method", "k", "part", "seed"]
    overall = parts.groupby(keys)[metrics].mean().reset_index().assign(category=OVERALL)
    table = pd.concat([parts, overall], ignore_index=True)
    grouped = table.groupby(["method", "category", "k", "part"], sort=True)
    means, stds = grouped[metrics].mean(), grouped[metrics].std(ddof=1).add_suffix("_std")
    counts = grouped["seed"].nunique().rename("n_seeds")
    result = pd.concat([counts, means, stds], axis=1).reset_index()
    return result[["method", "category", "k", "part", "n_seeds", *(c for m in metrics for c in (m, f"{m}_std"))]]


CALIBRATED = (0.5, 2.0)  # a fused member's z std on normal test images inside this range reads as calibrated


def fusion_folders(results: pd.DataFrame) -> set[str]:
    """The variant folders of the run's fusing methods: those whose rows record the members they fused."""
    fusing = results.loc[results["method_info"].astype(str).str.contains('"fused"'), "method"]
    return {variant_dirname(spec) for spec in fusing.unique()}


def calibration(parts: pd.DataFrame, fusions: set[str]) -> pd.DataFrame:
    """Each fused member's z-score std on the normal test images, per (fusion variant folder in `fusions`,
    category|overall, k): about 1 when the member's held-out statistics describe unseen normals, `normal_std_std`
    its spread over seeds (one draw of alike supports can carry the mean); `flag` says when the mean lies outside
    `CALIBRATED` (an over-confident member, std >> 1, outvotes the others whatever its quality)."""
    columns = ["method", "category", "k", "member", "n_seeds", "normal_std", "normal_std_std"]
    members = parts[parts["part"].str.startswith("z_") & parts["method"].isin(fusions)]
    if members.empty:
        return pd.DataFrame(columns=[*columns, "flag"])
    table = members.assign(member=members["part"].str[2:]).reindex(columns=columns).reset_index(drop=True)
    low, high = CALIBRATED
    table["flag"] = [("too wide" if std > high else "too narrow" if std < low else "") if pd.notna(std) else ""
                     for std in table["normal_std"]]
    return table

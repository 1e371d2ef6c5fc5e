"""Aggregation of a run's results.csv: mean and std (ddof=1) over seeds, per category, per k, overall; AUFC.

VAND protocol: F1-max is averaged over seeds per (k, category), then over categories per k; AUFC is
the trapezoidal area of that mean F1 over the actual k values (normalised by k_max - k_min).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leaderboard.columns import METRIC_COLUMNS, RESULT_COLUMNS, TIMING_COLUMNS
from metrics import aufc

OVERALL = "overall"
SUMMARY_COLUMNS = ("method", "preset", "category", "k", "n_seeds")
AGGREGATED = METRIC_COLUMNS + TIMING_COLUMNS


def read_results(run_dir: Path) -> pd.DataFrame:
    """results.csv of a run folder with its stable columns; the latest row wins per cell."""
    path = Path(run_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.csv in this run folder")
    frame = pd.read_csv(path, dtype={"method": str, "preset": str, "category": str, "status": str})
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return frame.drop_duplicates(subset=["method", "preset", "category", "k", "seed"], keep="last")


def _seed_stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(by, sort=True)
    means = grouped[list(AGGREGATED)].mean()
    stds = grouped[list(AGGREGATED)].std(ddof=1).add_suffix("_std")
    counts = grouped["seed"].nunique().rename("n_seeds")
    return pd.concat([counts, means, stds], axis=1).reset_index()


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """leaderboard.csv: one row per (method, preset, category|overall, k), then one k='all' row per
    (method, preset, category|overall) with the average F1 over k, AUFC and normalised AUFC."""
    ok = results[results["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=[*SUMMARY_COLUMNS, *AGGREGATED])
    per_category = _seed_stats(ok, ["method", "preset", "category", "k"])
    # overall: mean over categories within each seed, then mean/std over seeds
    per_seed = ok.groupby(["method", "preset", "k", "seed"])[list(AGGREGATED)].mean().reset_index()
    per_seed["category"] = OVERALL
    overall = _seed_stats(per_seed, ["method", "preset", "category", "k"])
    overall["n_seeds"] = ok.groupby(["method", "preset", "k"])["seed"].nunique().values
    table = pd.concat([per_category, overall], ignore_index=True)
    summaries = []
    for (method, preset, category), group in table.groupby(["method", "preset", "category"], sort=False):
        group = group.sort_values("k")
        value, normalised = aufc(group["k"].tolist(), group["f1_max"].tolist()) if group["f1_max"].notna().all() else (None, None)
        summaries.append({"method": method, "preset": preset, "category": category, "k": "all",
                          "n_seeds": int(group["n_seeds"].min()), "f1_max": group["f1_max"].mean(),
                          "aufc": value, "aufc_norm": normalised})
    table["k"] = table["k"].astype(int).astype(str)
    table = pd.concat([table, pd.DataFrame(summaries)], ignore_index=True)
    columns = [*SUMMARY_COLUMNS, "aufc", "aufc_norm",
               *[c for m in AGGREGATED for c in (m, f"{m}_std")]]
    table = table.reindex(columns=columns)
    order = {"overall": 1}
    table["_cat"] = table["category"].map(lambda c: order.get(c, 0))
    table["_k"] = table["k"].map(lambda k: np.inf if k == "all" else int(k))
    return table.sort_values(["method", "preset", "_cat", "category", "_k"]).drop(columns=["_cat", "_k"]).reset_index(drop=True)


def status_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Cells per (method, preset, status): skipped or failed methods stay visible."""
    return results.groupby(["method", "preset", "status"]).size().rename("cells").reset_index()

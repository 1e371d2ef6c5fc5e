"""Aggregation of a run's results.csv: mean and std (ddof=1) over seeds, per category, per k, overall; AUFC.

VAND protocol: F1-max is averaged over seeds per (k, category), then over categories per k; AUFC is
the trapezoidal area of that mean F1 over the actual k values (normalised by k_max - k_min).
Rows with different `anomaly_shots` (m labelled anomalies per cell, `--anomaly-shots`; 0 in a results.csv from
before the column) are never averaged together: each m is aggregated on its own, and leaderboard.csv's last
column says which m a row is over.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from leaderboard.intervals import CI_COLUMNS, Replicates, interval_columns
from metrics import aufc
from runfolder.reading import read_results_file
from runfolder.schema import ANOMALY_SHOTS, CELL_KEY, METRIC_COLUMNS, RESULT_COLUMNS, TIMING_COLUMNS, RunPaths

OVERALL = "overall"
SUMMARY_COLUMNS = ("method", "preset", "category", "k", "n_seeds")
AGGREGATED = METRIC_COLUMNS + TIMING_COLUMNS
MISSING = "missing_cells"  # cells of the row's scope without an ok row; then the CI columns (added after it)
# then `anomaly_shots`, the last column


def with_anomaly_shots(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with an integer `anomaly_shots` column: 0 where it is absent or empty (before the track)."""
    shots = results[ANOMALY_SHOTS] if ANOMALY_SHOTS in results.columns else pd.Series(0, index=results.index)
    return results.assign(**{ANOMALY_SHOTS: pd.to_numeric(shots, errors="coerce").fillna(0).astype(int)})


def read_results(run_dir: Path) -> pd.DataFrame:
    """results.csv of a run folder with its stable columns; the latest row wins per cell.

    A malformed file is a `RunFolderError` (a ValueError) naming the file and line; a last row cut
    short by a crash is left out with a one-line warning on stderr (the next resume reruns its cell)."""
    table = read_results_file(RunPaths(Path(run_dir)).results)
    if table.torn_text is not None:
        print(f"warning: {table.path}, line {table.torn_line}: the last row was cut short (a crash while it was "
              "written); left out", file=sys.stderr)
    if not table.rows:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    frame = pd.read_csv(io.StringIO(table.complete_text),
                        dtype={"method": str, "preset": str, "category": str, "status": str})
    return with_anomaly_shots(frame).drop_duplicates(subset=[*CELL_KEY, ANOMALY_SHOTS], keep="last")


def _seed_stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(by, sort=True)
    means = grouped[list(AGGREGATED)].mean()
    stds = grouped[list(AGGREGATED)].std(ddof=1).add_suffix("_std")
    counts = grouped["seed"].nunique().rename("n_seeds")
    return pd.concat([counts, means, stds], axis=1).reset_index()


def aggregate(results: pd.DataFrame, replicates: Replicates | None = None) -> pd.DataFrame:
    """leaderboard.csv: one row per (method, preset, category|overall, k), then one k='all' row per
    (method, preset, category|overall) with the average F1 over k, AUFC and normalised AUFC.

    The last columns, after `missing_cells`, are the 95 % bootstrap intervals of image AUROC and F1-max
    (`leaderboard.intervals`), from `replicates` (`intervals.read_replicates`); empty without them. Then
    `anomaly_shots`: each m of the results is aggregated apart (see the module)."""
    columns = [*SUMMARY_COLUMNS, "aufc", "aufc_norm", *[c for m in AGGREGATED for c in (m, f"{m}_std")], MISSING,
               *CI_COLUMNS, ANOMALY_SHOTS]
    results = with_anomaly_shots(results)
    tables = [_aggregate_one(group, replicates, columns[:-1]).assign(**{ANOMALY_SHOTS: shots})
              for shots, group in results.groupby(ANOMALY_SHOTS, sort=True)]
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame(columns=columns)
    table = pd.concat(tables, ignore_index=True).reindex(columns=columns)
    order = {"overall": 1}
    table["_cat"] = table["category"].map(lambda c: order.get(c, 0))
    table["_k"] = table["k"].map(lambda k: np.inf if k == "all" else int(k))
    return table.sort_values(["method", "preset", ANOMALY_SHOTS, "_cat", "category", "_k"]).drop(
        columns=["_cat", "_k"]).reset_index(drop=True)


def _aggregate_one(results: pd.DataFrame, replicates: Replicates | None, columns: list[str]) -> pd.DataFrame:
    """`aggregate` of results that all have one `anomaly_shots`, unsorted, in `columns`."""
    ok = results[results["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=columns)
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
    table[MISSING] = _missing_cells(results, table)
    table[list(CI_COLUMNS)] = interval_columns(table, results, replicates, overall=OVERALL)
    return table.reindex(columns=columns)


class Grid:
    """The cells a results table should hold: its categories x k values x seeds (the union over all its
    rows, whatever their method or status) for each (method, preset), and which of them are ok."""

    def __init__(self, results: pd.DataFrame) -> None:
        self.categories = sorted(set(results["category"].astype(str)))
        self.ks = sorted(set(results["k"].astype(int)))
        self.seeds = sorted(set(results["seed"].astype(int)))
        columns = (results["method"], results["preset"], results["category"].astype(str), results["k"].astype(int),
                   results["seed"].astype(int), results["status"])
        self.status = {(m, p, c, k, s): status for m, p, c, k, s, status in zip(*columns)}

    def missing(self, method: str, preset: str, categories: list[str], ks: list[int]) -> int:
        """Cells of these categories and k values (every seed) without an ok row."""
        return sum(self.status.get((method, preset, c, k, s)) != "ok"
                   for c in categories for k in ks for s in self.seeds)


def _missing_cells(results: pd.DataFrame, table: pd.DataFrame) -> list[int]:
    """Per leaderboard row, how many cells of its scope have no ok row: a category row covers its k (or
    every k for k='all') over every seed; an `overall` row covers every category. 0 = complete."""
    grid = Grid(results)
    counts = []
    for row in table.itertuples(index=False):
        categories = grid.categories if row.category == OVERALL else [row.category]
        ks = grid.ks if row.k == "all" else [int(row.k)]
        counts.append(grid.missing(row.method, row.preset, categories, ks))
    return counts


def status_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Cells per (method, preset, status): skipped or failed methods stay visible, and cells of the grid
    (categories x k x seeds of the whole table) with no row at all count as `missing`."""
    counts = results.groupby(["method", "preset", "status"]).size().rename("cells").reset_index()
    if results.empty:
        return counts
    grid = Grid(results)
    expected = len(grid.categories) * len(grid.ks) * len(grid.seeds)
    present = results.drop_duplicates(list(CELL_KEY)).groupby(["method", "preset"]).size()
    absent = [{"method": m, "preset": p, "status": "missing", "cells": expected - n}
              for (m, p), n in present.items() if expected > n]
    return pd.concat([counts, pd.DataFrame(absent, columns=counts.columns)], ignore_index=True) if absent else counts

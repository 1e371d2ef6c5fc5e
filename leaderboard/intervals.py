"""Confidence intervals of leaderboard.csv's image AUROC and F1-max, from the per-image score CSVs.

Each ok cell's test images are resampled by `metrics.bootstrap` (stratified by label, `N_RESAMPLES`
= 1000 resamples, seed `SEED` = 0, 95 % percentile interval). A leaderboard row's interval is a
bootstrap of the row's own number, not an average of per-cell bounds: replicate b of a row is computed
from replicate b of its cells exactly as the row's value is computed from the cells' values (mean over
seeds for a category row; mean over categories within each seed, then over seeds, for `overall`; mean
over k of the F1 for a k='all' row), and the interval is the percentile interval of those replicates.
Averaging per-cell bounds would give an interval as wide as one cell's while the row averages several
cells; the bootstrap of the mean narrows as cells are added, as the mean's uncertainty does. Because a
cell's resample depends only on its labels' order, count and seed, the seeds (and methods) of a category,
which score the same test images, resample those images jointly: the interval is the uncertainty due to
the finite test set, the seed-to-seed spread stays in the `_std` columns. A row with an ok cell whose
score CSV is missing, or where the metric does not apply, gets empty bounds. F1-max is a maximum over
thresholds, so its resampled values lean high: its interval can sit mostly above the point estimate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from metrics.bootstrap import LEVEL, N_RESAMPLES, SEED, bootstrap_replicates, percentile_interval
from runfolder.schema import RunPaths, variant_dirname

CI_METRICS = ("image_auroc", "f1_max")
CI_COLUMNS = tuple(f"{m}_ci_{end}" for m in CI_METRICS for end in ("low", "high"))
Replicates = Mapping[tuple[str, str, str, int, int], Mapping[str, np.ndarray]]


def read_replicates(run_dir: Path, results: pd.DataFrame, n_resamples: int = N_RESAMPLES,
                    seed: int = SEED) -> dict[tuple[str, str, str, int, int], dict[str, np.ndarray]]:
    """Bootstrap replicates of every ok cell with a score CSV, keyed (method, preset, category, k, seed).
    Rows are sorted by image id before resampling, so cells with the same test images resample them alike."""
    paths = RunPaths(Path(run_dir))
    replicates = {}
    ok = results[results["status"] == "ok"]
    for method, preset, category, k, cell_seed in zip(ok["method"], ok["preset"], ok["category"].astype(str),
                                                      ok["k"].astype(int), ok["seed"].astype(int)):
        path = paths.scores(variant_dirname(str(method)), k, cell_seed, category)
        if not path.is_file():
            continue
        frame = pd.read_csv(path, usecols=["image", "label", "score"], dtype={"image": str})
        frame = frame.sort_values("image", kind="stable")
        replicates[(str(method), str(preset), category, k, cell_seed)] = bootstrap_replicates(
            frame["label"].to_numpy(), frame["score"].to_numpy(dtype=np.float64), n_resamples, seed)
    return replicates


def _mean(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    if not arrays or any(a is None for a in arrays):
        return None
    return np.mean(np.stack(arrays), axis=0)


def interval_columns(board: pd.DataFrame, results: pd.DataFrame, replicates: Replicates | None,
                     overall: str = "overall", level: float = LEVEL) -> pd.DataFrame:
    """The CI columns (`CI_COLUMNS`, in that order) for each row of an aggregated leaderboard."""
    out = pd.DataFrame(np.nan, index=board.index, columns=list(CI_COLUMNS))
    if not replicates or board.empty:
        return out
    ok = results[results["status"] == "ok"]
    cells: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for method, preset, category, k, seed in zip(ok["method"], ok["preset"], ok["category"].astype(str),
                                                 ok["k"].astype(int), ok["seed"].astype(int)):
        cells.setdefault((str(method), str(preset)), []).append((category, k, seed))

    def cell(method: str, preset: str, category: str, k: int, seed: int, metric: str) -> np.ndarray | None:
        values = replicates.get((method, preset, category, k, seed))
        return None if values is None else values[metric]

    def row_replicates(method: str, preset: str, category: str, k: int, metric: str) -> np.ndarray | None:
        mine = [c for c in cells.get((method, preset), []) if c[1] == k and (category == overall or c[0] == category)]
        seeds = sorted({s for _, _, s in mine})
        per_seed = [_mean([cell(method, preset, c, k, s, metric) for c, _, s2 in mine if s2 == s]) for s in seeds]
        return _mean(per_seed)  # category row: one cell per seed; overall: mean over categories within a seed

    for index, row in zip(board.index, board.itertuples(index=False)):
        method, preset, category = str(row.method), str(row.preset), str(row.category)
        for metric in CI_METRICS:
            if row.k == "all":
                if metric != "f1_max":
                    continue
                ks = sorted({k for c, k, _ in cells.get((method, preset), []) if category == overall or c == category})
                values = _mean([row_replicates(method, preset, category, k, metric) for k in ks])
            else:
                values = row_replicates(method, preset, category, int(row.k), metric)
            if values is not None:
                out.loc[index, [f"{metric}_ci_low", f"{metric}_ci_high"]] = percentile_interval(values, level)
    return out

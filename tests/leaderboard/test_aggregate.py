import numpy as np
import pandas as pd
import pytest

from leaderboard.aggregate import aggregate
from leaderboard.columns import RESULT_COLUMNS


def _results(rows):
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=RESULT_COLUMNS)


def test_mean_std_over_seeds_overall_and_aufc():
    rows = []
    f1 = {("a", 1): [0.6, 0.8], ("a", 2): [0.7, 0.9], ("b", 1): [0.8, 0.8], ("b", 2): [0.9, 0.7]}
    for (category, k), values in f1.items():
        for seed, value in zip((42, 0), values):
            rows.append({"method": "m", "preset": "offline", "category": category, "k": k, "seed": seed,
                         "status": "ok", "f1_max": value, "image_auroc": value})
    rows.append({"method": "m", "preset": "offline", "category": "a", "k": 1, "seed": 7, "status": "failed"})
    board = aggregate(_results(rows))
    a1 = board[(board.category == "a") & (board.k == "1")].iloc[0]
    assert a1.f1_max == pytest.approx(0.7) and a1.f1_max_std == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert a1.n_seeds == 2  # the failed cell does not count
    overall1 = board[(board.category == "overall") & (board.k == "1")].iloc[0]
    # per seed: mean over categories (seed 42: 0.7, seed 0: 0.8) then mean/std over seeds
    assert overall1.f1_max == pytest.approx(0.75) and overall1.f1_max_std == pytest.approx(np.std([0.7, 0.8], ddof=1))
    summary = board[(board.category == "overall") & (board.k == "all")].iloc[0]
    # overall F1: k=1 -> 0.75, k=2 -> 0.8; AUFC = (0.75 + 0.8) / 2 * 1, normalised by (2 - 1)
    assert summary.aufc == pytest.approx(0.775) and summary.aufc_norm == pytest.approx(0.775)


def test_single_k_has_no_aufc_and_empty_metrics_stay_empty():
    rows = [{"method": "m", "preset": "paper", "category": "a", "k": 4, "seed": s, "status": "ok", "f1_max": 0.5}
            for s in (1, 2)]
    board = aggregate(_results(rows))
    summary = board[board.k == "all"].iloc[0]
    assert pd.isna(summary.aufc)
    assert pd.isna(board[board.k == "4"].iloc[0].image_auroc_structural)

import numpy as np
import pandas as pd
import pytest

from leaderboard.aggregate import aggregate
from runfolder.schema import RESULT_COLUMNS


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


def _grid(skip=(), fail=()):
    rows = []
    for category in ("a", "b"):
        for k in (1, 2):
            for seed in (0, 1):
                cell = (category, k, seed)
                if cell in skip:
                    continue
                status = "failed" if cell in fail else "ok"
                rows.append({"method": "m", "preset": "offline", "category": category, "k": k, "seed": seed,
                             "status": status, "f1_max": 0.5 + 0.1 * k if status == "ok" else None})
    return _results(rows)


def _row(board, category, k):
    return board[(board.category == category) & (board.k == k)].iloc[0]


def test_complete_grid_has_no_missing_cells():
    board = aggregate(_grid())
    # missing_cells, then the bootstrap interval columns, then anomaly_shots (each added after the earlier ones)
    assert list(board.columns)[-6:] == ["missing_cells", "image_auroc_ci_low", "image_auroc_ci_high", "f1_max_ci_low",
                                        "f1_max_ci_high", "anomaly_shots"] and (board.missing_cells == 0).all()


def test_overall_and_aufc_over_an_incomplete_set_are_flagged():
    board = aggregate(_grid(fail=[("b", 2, 1)]))
    assert _row(board, "overall", "2").missing_cells == 1  # seed 1 of k=2 averages category a only
    assert _row(board, "overall", "all").missing_cells == 1 and _row(board, "b", "all").missing_cells == 1
    assert _row(board, "b", "2").missing_cells == 1
    assert _row(board, "overall", "1").missing_cells == 0 and _row(board, "a", "all").missing_cells == 0


def test_aufc_missing_a_whole_k_is_flagged():
    board = aggregate(_grid(skip=[("b", 2, 0), ("b", 2, 1)]))  # no row at all: a crash before b's k=2 cells
    summary = _row(board, "b", "all")
    assert summary.missing_cells == 2 and pd.isna(summary.aufc)  # only k=1 left for b
    assert _row(board, "overall", "all").missing_cells == 2


def test_status_counts_include_cells_without_a_row():
    from leaderboard.aggregate import status_counts
    from leaderboard.render import cell_summary

    counts = status_counts(_grid(skip=[("b", 2, 0)], fail=[("a", 1, 0)]))
    assert dict(zip(counts.status, counts.cells)) == {"ok": 6, "failed": 1, "missing": 1}
    assert cell_summary(counts).startswith("cells: 6 ok, 1 failed, 0 skipped, 1 missing")

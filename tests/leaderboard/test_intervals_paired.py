"""Bootstrap intervals in leaderboard.csv and paired comparisons, on hand-made run folders."""
import json
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from leaderboard.__main__ import main
from leaderboard.aggregate import MISSING, aggregate
from leaderboard.intervals import CI_COLUMNS, read_replicates
from leaderboard.paired import fusion_members, paired
from leaderboard.show import write_report
from metrics import f1_max, image_auroc
from metrics.bootstrap import bootstrap_replicates, percentile_interval
from runfolder.schema import RESULT_COLUMNS, RunPaths

LABELS = np.array([0] * 6 + [1] * 5)


def _scores(method, category, k, seed):
    if method == "perfect":
        return np.linspace(0, 1, LABELS.size)  # the anomalies (last) score highest
    rng = np.random.default_rng(zlib.crc32(f"{method}/{category}/{k}/{seed}".encode()))
    return rng.normal(0, 1, LABELS.size) + LABELS * (1.0 if method == "fusion" else 0.6)


def _write_run(root, methods=("patchcore", "fusion"), categories=("a", "b"), ks=(1, 2), seeds=(0, 1), skip=()):
    paths = RunPaths(root)
    rows = []
    for method in methods:
        for category in categories:
            for k in ks:
                for seed in seeds:
                    if (method, category, k, seed) in skip:
                        continue
                    scores = _scores(method, category, k, seed)
                    frame = pd.DataFrame({"image": [f"img{i:02d}" for i in range(LABELS.size)],
                                          "kind": np.where(LABELS == 1, "logical_anomalies", "good"),
                                          "label": LABELS, "score": scores, "path": ""})
                    target = paths.scores(method, k, seed, category)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    frame.sample(frac=1, random_state=seed).to_csv(target, index=False)  # row order must not matter
                    info = {"fused": ["patchcore"]} if method == "fusion" else {}
                    rows.append({"method": method, "preset": "offline", "category": category, "k": k, "seed": seed,
                                 "status": "ok", "image_auroc": image_auroc(LABELS, scores),
                                 "f1_max": f1_max(LABELS, scores), "method_info": json.dumps(info)})
    pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS).to_csv(paths.results, index=False)
    return root


@pytest.fixture
def run_dir(tmp_path):
    return _write_run(tmp_path / "run")


def test_ci_columns_come_after_the_existing_ones(run_dir):
    write_report(run_dir)
    board = pd.read_csv(RunPaths(run_dir).leaderboard, dtype={"k": str})
    columns = list(board.columns)
    assert columns[-len(CI_COLUMNS) - 2:] == [MISSING, *CI_COLUMNS, "anomaly_shots"]
    assert columns == list(aggregate(pd.DataFrame(columns=RESULT_COLUMNS)).columns)
    cells = board[board.k != "all"]
    assert cells[list(CI_COLUMNS)].notna().all().all()
    assert ((cells.image_auroc_ci_low <= cells.image_auroc + 1e-6) & (cells.image_auroc <= cells.image_auroc_ci_high + 1e-6)).all()
    assert board[board.k == "all"].f1_max_ci_low.notna().all() and board[board.k == "all"].image_auroc_ci_low.isna().all()


def test_perfect_cells_give_one_one_and_rows_bootstrap_the_seed_mean(tmp_path):
    run_dir = _write_run(tmp_path / "p", methods=("perfect", "patchcore"))
    results = pd.read_csv(RunPaths(run_dir).results)
    board = aggregate(results, read_replicates(run_dir, results))
    perfect = board[(board.method == "perfect") & (board.k != "all")]
    assert (perfect[["image_auroc_ci_low", "image_auroc_ci_high", "f1_max_ci_low", "f1_max_ci_high"]] == 1.0).all().all()
    row = board[(board.method == "patchcore") & (board.category == "a") & (board.k == "1")].iloc[0]
    per_seed = []
    for seed in (0, 1):  # the same resamples as read_replicates: rows sorted by image id, default count and seed
        per_seed.append(bootstrap_replicates(LABELS, _scores("patchcore", "a", 1, seed))["image_auroc"])
    expected = percentile_interval(np.mean(per_seed, axis=0))
    assert (row.image_auroc_ci_low, row.image_auroc_ci_high) == pytest.approx(expected)
    again = aggregate(results, read_replicates(run_dir, results))
    pd.testing.assert_frame_equal(board, again)  # seeded: reproducible


def test_without_score_csvs_the_bounds_stay_empty(run_dir):
    results = pd.read_csv(RunPaths(run_dir).results)
    board = aggregate(results)
    assert board[list(CI_COLUMNS)].isna().all().all()


def test_paired_cells_match_by_category_k_seed_and_count_the_rest(tmp_path):
    def rows(method, preset, cells):
        return [{"method": method, "preset": preset, "category": c, "k": k, "seed": s, "status": status,
                 "image_auroc": v, "f1_max": v} for c, k, s, v, status in cells]
    a = rows("x", "offline", [("c1", 1, 0, 0.9, "ok"), ("c1", 1, 1, 0.8, "ok"), ("c2", 1, 0, 0.7, "ok"),
                              ("c1", 2, 0, 0.6, "failed"), ("c2", 2, 0, 0.75, "ok")])
    b = rows("y", "paper", [("c1", 1, 0, 0.85, "ok"), ("c1", 1, 1, 0.9, "ok"), ("c1", 2, 0, 0.5, "ok"),
                            ("c2", 2, 0, 0.7, "ok"), ("c2", 2, 1, 0.7, "ok")])
    results = pd.DataFrame(a + b).reindex(columns=RESULT_COLUMNS)
    table = paired(results, "x", "y").set_index("metric")
    row = table.loc["image_auroc"]
    assert row.n_cells == 3  # (c1,1,0), (c1,1,1), (c2,2,0); presets differ, the cell key does not
    assert (row.only_a, row.only_b) == (1, 2)  # A: (c2,1,0); B: (c1,2,0) (A failed), (c2,2,1)
    d = np.array([0.9 - 0.85, 0.8 - 0.9, 0.75 - 0.7])
    assert row.mean_diff == pytest.approx(d.mean()) and row.p_value == pytest.approx(wilcoxon(d).pvalue)
    assert (row.a_better, row.b_better) == (2, 1)


def test_paired_all_positive_over_many_cells_is_small(tmp_path):
    cells = [(c, k, s) for c in ("a", "b") for k in (1, 2) for s in (0, 1, 2)]
    rows = [{"method": m, "preset": "offline", "category": c, "k": k, "seed": s, "status": "ok",
             "image_auroc": 0.7 + 0.01 * i + (0.02 + 0.001 * i if m == "good" else 0.0), "f1_max": 0.5}
            for m in ("good", "base") for i, (c, k, s) in enumerate(cells)]
    table = paired(pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS), "good", "base").set_index("metric")
    assert table.loc["image_auroc"].n_cells == 12 and table.loc["image_auroc"].p_value < 0.001
    assert table.loc["image_auroc"].ci_low > 0
    assert table.loc["f1_max"].p_value == 1.0 and table.loc["f1_max"].mean_diff == 0


def test_report_has_the_fusion_section_and_the_cli_prints_it(run_dir, capsys):
    results = pd.read_csv(RunPaths(run_dir).results)
    assert fusion_members(results) == [("fusion", "patchcore", "offline")]
    report = write_report(run_dir).read_text()
    assert "## Paired comparisons: fusion vs each member" in report and "Wilcoxon" in report
    assert "## Confidence intervals" in report
    section = report[report.index("## Paired comparisons"):]
    assert "| fusion | patchcore | image_auroc | 8 |" in section
    assert main(["paired", str(run_dir), "--a", "fusion", "--b", "patchcore"]) == 0
    out = capsys.readouterr().out
    assert "fusion − patchcore" in out and "image_auroc" in out
    assert main(["paired", str(run_dir), "--a", "fusion", "--b", "nope"]) == 2


def test_compare_prints_paired_rows(run_dir, tmp_path, capsys):
    other = _write_run(tmp_path / "other", skip={("patchcore", "a", 1, 0)})
    assert main(["compare", str(run_dir), str(other)]) == 0
    out = capsys.readouterr().out
    assert "paired per method" in out


def test_paired_on_some_shot_counts_and_other_metrics(run_dir, capsys):
    results = pd.read_csv(RunPaths(run_dir).results)
    results["image_auroc_logical"] = results["image_auroc"] - 0.1 * results["k"]
    table = paired(results, "fusion", "patchcore", shots=(2,), metrics=("image_auroc_logical",)).set_index("metric")
    row = table.loc["image_auroc_logical"]
    k2 = results[results["k"] == 2].pivot_table(index=["category", "seed"], columns="method",
                                                  values="image_auroc_logical")
    d = (k2["fusion"] - k2["patchcore"]).to_numpy()
    assert list(table.index) == ["image_auroc_logical"] and row.n_cells == 4  # 2 categories x 2 seeds at k = 2
    assert row.mean_diff == pytest.approx(d.mean()) and row.p_value == pytest.approx(wilcoxon(d).pvalue)
    assert main(["paired", str(run_dir), "--a", "fusion", "--b", "patchcore", "--k", "1", "--metric", "f1_max"]) == 0
    out = capsys.readouterr().out
    assert "k = 1" in out and "f1_max" in out and "image_auroc " not in out
    assert main(["paired", str(run_dir), "--a", "fusion", "--b", "patchcore", "--k", "8"]) == 2  # no cell at k = 8
    assert main(["paired", str(run_dir), "--a", "fusion", "--b", "patchcore", "--metric", "nope"]) == 2

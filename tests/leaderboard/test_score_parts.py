"""Score parts (branch and member AUROCs) from hand-written score CSVs, checked against scikit-learn."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leaderboard.score_parts import aggregate_score_parts, read_score_parts
from runfolder.schema import RunPaths

KINDS = ["good"] * 3 + ["logical_anomalies"] * 2 + ["structural_anomalies"] * 2
LABELS = [0, 0, 0, 1, 1, 1, 1]


def _write(run, method, k, seed, category, local, glob):
    path = RunPaths(run).scores(method, k, seed, category)
    path.parent.mkdir(parents=True, exist_ok=True)
    score = [a + b for a, b in zip(local, glob)]
    images = [f"{kind}/{i:03d}" for i, kind in enumerate(KINDS)]
    pd.DataFrame({"image": images, "kind": KINDS, "label": LABELS, "score": score,
                  "path": [f"{category}/test/{image}.png" for image in images],
                  "local": local, "global": glob}).to_csv(path, index=False)


def test_branch_aurocs_per_anomaly_kind(tmp_path):
    local = [0.1, 0.2, 0.3, 0.15, 0.25, 0.9, 0.8]  # catches structural anomalies only
    glob = [0.1, 0.2, 0.3, 0.9, 0.8, 0.25, 0.05]  # catches logical anomalies only
    _write(tmp_path, "gcad", 4, 0, "pill_tray", local, glob)
    parts = read_score_parts(tmp_path).set_index("part")
    assert parts.loc["global", "auroc_logical"] == 1.0 and parts.loc["local", "auroc_structural"] == 1.0
    logical = [0, 1, 2, 3, 4]
    assert parts.loc["local", "auroc_logical"] == pytest.approx(
        roc_auc_score([LABELS[i] for i in logical], [local[i] for i in logical]))
    assert parts.loc["global", "auroc"] == pytest.approx(roc_auc_score(LABELS, glob))
    assert parts.loc["local", "normal_std"] == pytest.approx(np.std([0.1, 0.2, 0.3]))  # normals only, ddof 0


def test_overall_is_the_mean_over_categories_within_a_seed(tmp_path):
    perfect, inverted = [0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]
    for seed, second in ((0, perfect), (1, inverted)):
        _write(tmp_path, "gcad", 2, seed, "a", perfect, perfect)
        _write(tmp_path, "gcad", 2, seed, "b", second, second)
    table = aggregate_score_parts(read_score_parts(tmp_path))
    overall = table[(table["category"] == "overall") & (table["part"] == "local")].iloc[0]
    assert overall["auroc"] == pytest.approx(0.75)  # seed 0: (1 + 1)/2, seed 1: (1 + 0)/2
    assert overall["auroc_std"] == pytest.approx(pd.Series([1.0, 0.5]).std(ddof=1))
    assert overall["n_seeds"] == 2


def test_runs_without_score_parts_give_an_empty_table(tmp_path):
    path = RunPaths(tmp_path).scores("patchcore", 1, 0, "a")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"image": ["good/000"], "kind": ["good"], "label": [0], "score": [0.1],
                  "path": ["a/test/good/000.png"]}).to_csv(path, index=False)
    assert aggregate_score_parts(read_score_parts(tmp_path)).empty


def test_score_csvs_written_before_the_path_column_still_read(tmp_path):
    path = RunPaths(tmp_path).scores("gcad", 1, 0, "a")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"image": ["good/000", "logical_anomalies/000"], "kind": ["good", "logical_anomalies"],
                  "label": [0, 1], "score": [0.1, 0.9], "local": [0.2, 0.3]}).to_csv(path, index=False)
    parts = read_score_parts(tmp_path)
    assert sorted(parts["part"]) == ["local", "score"] and parts.set_index("part").loc["local", "auroc_logical"] == 1.0


def test_calibration_flags_fused_members_outside_half_to_two():
    import pandas as pd

    from leaderboard.score_parts import calibration, fusion_folders

    results = pd.DataFrame({"method": ["fusion:members=a+b", "gcad"],
                            "method_info": ['{"fused": ["a", "b"]}', '{"steps": 2}']})
    assert fusion_folders(results) == {"fusion_members_a_b"}
    parts = pd.DataFrame({
        "method": ["fusion_members_a_b"] * 4 + ["gcad"], "category": ["overall"] * 5, "k": [1, 1, 2, 2, 1],
        "part": ["z_a", "z_b", "z_a", "score", "z_local"], "n_seeds": [3] * 5,
        "normal_std": [0.49, 2.0, 7.5, 1.0, 0.1]})
    table = calibration(parts, fusion_folders(results))
    assert list(zip(table["member"], table["k"], table["flag"])) == [("a", 1, "too narrow"), ("b", 1, ""),
                                                                      ("a", 2, "too wide")]


def test_calibration_cells_show_the_spread_over_seeds_and_the_flag_of_the_mean():
    import pandas as pd

    from leaderboard.render import calibration_rows
    from leaderboard.score_parts import calibration

    parts = pd.DataFrame({"method": ["fusion"] * 3, "category": ["juice"] * 3, "k": [4, 4, 8],
                          "part": ["z_a", "z_b", "z_a"], "n_seeds": [3, 3, 1],
                          "normal_std": [3.27, 1.0, 0.4], "normal_std_std": [3.37, 0.1, float("nan")]})
    header, rows = calibration_rows(calibration(parts, {"fusion"}))
    assert header == ["fusion", "member", "k=4", "k=8"]
    assert rows == [["fusion", "a", "3.27 ± 3.37 (too wide)", "0.40 (too narrow)"],
                    ["fusion", "b", "1.00 ± 0.10", "–"]]
    older = parts.drop(columns="normal_std_std")  # a frame without the spread column: the means alone
    assert calibration_rows(calibration(older, {"fusion"}))[1][1][2] == "1.00"

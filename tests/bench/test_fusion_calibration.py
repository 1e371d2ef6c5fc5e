"""The fusion calibration diagnosis: each fusion row is re-fused on its own category's scores, and the scale
candidates are what their docstrings say (no harness run: a hand-written run folder)."""
import csv
import json

import numpy as np
import pytest

from bench.fusion_calibration import CLIP_FLOOR, CV_PRIOR, _scores, analyse, candidate_scales


def _entry(loo, loo_views, views_full=(1.0, 2.0)):
    return {"used": {"mean": 0.0, "std": 1.0}, "views_full": list(views_full), "loo": list(loo),
            "loo_views": list(loo_views)}


def _write_run(root, diag_by_category, scores_by_category):
    """results.csv with one fusion row per category (k = 2, seed 0) and each member's score CSVs."""
    with (root / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["method", "category", "k", "seed", "status", "method_info"])
        writer.writeheader()
        for category, diag in diag_by_category.items():
            writer.writerow({"method": "fusion", "category": category, "k": 2, "seed": 0, "status": "ok",
                             "method_info": json.dumps({"diag": diag})})
    for category, members in scores_by_category.items():
        for member, rows in members.items():
            folder = root / "scores" / member / "k2_s0"
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"{category}.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, ["label", "score"])
                writer.writeheader()
                writer.writerows({"label": label, "score": score} for label, score in rows)


def test_scores_are_read_per_category(tmp_path):
    scores = {"a": {"patchcore": [(0, 1.0), (1, 5.0)]}, "b": {"patchcore": [(0, 100.0), (0, 101.0), (1, 9.0)]}}
    _write_run(tmp_path, {}, scores)
    labels, values = _scores(tmp_path, "patchcore", "a", 2, 0)
    assert labels.tolist() == [0, 1] and values.tolist() == [1.0, 5.0]  # not category b's rows beside them


def test_candidate_scales_by_hand():
    loo, loo_views = [10.0, 11.0], [10.5, 10.2, 11.4, 10.9]
    held = np.array(loo + loo_views)
    patchcore = candidate_scales(_entry(loo, loo_views), 2, "patchcore")
    assert patchcore["loo+loo_views_ddof1"] == ("linear", pytest.approx(held.std(ddof=1)))
    assert patchcore["log_held_out"] == ("log", pytest.approx(np.log(held).std(ddof=1)))
    prior = CV_PRIOR["patchcore"] * held.mean()  # above the held-out std here: the prior decides
    assert prior > held.std(ddof=1)
    assert patchcore["cv_max"] == ("linear", pytest.approx(prior))
    assert patchcore["cv_shrink"] == ("linear", pytest.approx(np.sqrt((held.var(ddof=1) + prior**2) / 2)))
    clip = candidate_scales(_entry([-0.1, 0.1], [0.0, 0.05]), 2, "clip_logic")  # a sum of z-values: no log, no prior
    spread = np.std([-0.1, 0.1, 0.0, 0.05], ddof=1)
    assert clip["log_held_out"] == clip["cv_max"] == ("linear", pytest.approx(spread))
    assert clip["clip_floor"] == ("linear", CLIP_FLOOR)
    # the default rule: the geometric mean of the leave-one-out and views spreads, a distance member's floored at
    # fusion's distance_floor x the leave-one-out mean (here the floor decides), clip_logic's never
    geomean = (np.std(loo) * np.std([1.0, 2.0])) ** 0.5
    assert patchcore["geomean(loo, views_full)"] == ("linear", pytest.approx(geomean))
    assert 0.15 * np.mean(loo) > geomean
    assert patchcore["geomean+floor"] == ("linear", pytest.approx(0.15 * np.mean(loo)))
    assert clip["geomean+floor"] == clip["geomean(loo, views_full)"]


def test_analyse_prints_each_candidate_on_the_rows_own_category(tmp_path, capsys):
    member = _entry([10.0, 11.0], [10.5, 10.2])
    scores = {"a": {"patchcore": [(0, 1.0), (0, 2.0), (1, 5.0)]}, "b": {"patchcore": [(0, 50.0), (0, 52.0), (1, 0.5)]}}
    _write_run(tmp_path, {"a": {"patchcore": member}, "b": {"patchcore": member}}, scores)
    analyse([tmp_path])
    out = capsys.readouterr().out
    assert "## k = 2 (2 cells)" in out
    assert "| log_held_out |" in out and "| oracle |" in out
    # one member: fusion ranks as it does in each cell, whatever the scale
    assert "+0.000 | +0.000 |" in out.splitlines()[-1]


def test_clip_rule_today_is_clip_logics_own_standardiser():
    from bench.fusion_calibration import _clip_scores
    from methods.standardise import Standardiser
    import torch
    held = np.array([[0.10, 0.020, 2.0], [0.14, 0.021, 5.0], [0.12, 0.019, 3.0]])
    test = np.array([[0.2, 0.05, 9.0], [0.11, 0.02, 3.0]])
    own = Standardiser.fit(torch.tensor(held), dim=0, relative_floor=0.5)  # as ClipLogic.fit
    expected = own(torch.tensor(test)).sum(dim=1).numpy()
    assert np.allclose(_clip_scores("relative_floor=0.5", held, test), expected)
    logs = np.log(held + 1e-6)  # the log rule: log terms standardised, scale at least the floor in log units
    by_hand = ((np.log(test + 1e-6) - logs.mean(0)) / np.maximum(logs.std(0), 0.5)).sum(1)
    assert np.allclose(_clip_scores("log=0.5", held, test), by_hand)


def test_clip_rules_refuse_on_recorded_terms(tmp_path, capsys):
    from bench.fusion_calibration import clip_rules
    held = [[0.10, 0.020, 2.0], [0.14, 0.021, 5.0]]
    terms = {"held": held, "views_full": [[0.01, 0.001, 0.5]] * 4, "loo": held, "loo_views": [held, held],
             "nested_held": [held, held]}
    diag = {"a": {"patchcore": _entry([10.0, 11.0], [10.5, 10.2]),
                  "clip_logic": {**_entry([0.0, 0.1], [0.0, 0.0]), "terms": terms}}}
    _write_run(tmp_path, diag, {"a": {"patchcore": [(0, 1.0), (0, 2.0), (1, 5.0)]}})
    folder = tmp_path / "scores" / "clip_logic" / "k2_s0"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("label,score,few_shot,global,components\n0,0,0.1,0.02,2\n0,0,0.13,0.02,4\n"
                                  "1,0,0.3,0.09,20\n")
    clip_rules([tmp_path])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| relative_floor=0.5 | geomean | 2 |")]
    assert len(rows) == 1 and "| 1 |" in rows[0]  # one cell
    assert "| 1.000 |" in rows[0]  # clip_logic separates the anomaly from both normals

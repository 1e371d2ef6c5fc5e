"""anomalib's models through the plugin door: `anomalib:Patchcore` computes what the harness's anomalib-equal
PatchCore computes, runs in a grid beside and fused with a built-in, and the models that cannot run say why."""
import importlib.util
import json

import pandas as pd
import pytest

from runfolder.schema import RunPaths
from submission.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("anomalib") is None,
                                reason="anomalib is not installed (make install brings it)")

FIND_SPEC = importlib.util.find_spec
ANOMALIB_EQUAL = "anomalib:Patchcore:coreset_sampling_ratio=1.0,num_neighbors=1,input_size=64"  # the harness run: 64 px, every patch, 1 neighbour
FUSED = "anomalib:Patchcore+patchcore:aggregation=concat"  # anomalib's defaults (10 % coreset, 9 neighbours) too


def _rows(out):
    return pd.read_csv(RunPaths(out).results, dtype=str, keep_default_na=False)


def _scores(out, spec, k, seed, category="pill_tray"):
    from runfolder.schema import variant_dirname

    frame = pd.read_csv(out / "scores" / variant_dirname(spec) / f"k{k}_s{seed}" / f"{category}.csv")
    return frame.set_index("image")["score"]


@pytest.fixture(scope="module")
def grid(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("anomalib") / "run"
    assert main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "2", "--seeds", "42",
                 "--preset", "offline", "--image-size", "64", "--out", str(out), "--methods", ANOMALIB_EQUAL,
                 "anomalib:Patchcore", "anomalib:Padim", "patchcore:aggregation=concat", "anomalib:Stfpm",
                 f"fusion:members={FUSED}"]) == 0
    return out


def test_anomalib_patchcore_scores_equal_the_harness_anomalib_computation(grid):
    for k in (1, 2):
        ours = _scores(grid, "patchcore:aggregation=concat", k, 42)
        theirs = _scores(grid, ANOMALIB_EQUAL, k, 42)
        assert (theirs - ours).abs().max() <= 1e-4 * ours.abs().max(), (k, (theirs - ours).abs().max())


def test_runs_in_a_grid_fuses_and_the_others_say_why_they_cannot(grid):
    rows = _rows(grid).set_index(["method", "k"])
    assert rows.loc[(ANOMALIB_EQUAL, "1"), "status"] == "ok" and rows.loc[(ANOMALIB_EQUAL, "1"), "pixel_auroc"] != ""
    assert rows.loc[("anomalib:Padim", "2"), "status"] == "ok"
    assert rows.loc[("anomalib:Padim", "1"), "status"] == "failed"  # a covariance from one image: said, not NaN
    assert "needs k >= 2" in rows.loc[("anomalib:Padim", "1"), "method_info"]
    assert set(rows.xs(f"fusion:members={FUSED}", level="method")["status"]) == {"ok"}
    assert set(rows.xs("anomalib:Patchcore", level="method")["status"]) == {"ok"}
    skipped = rows.loc[("anomalib:Stfpm", "1")]
    assert skipped["status"] == "skipped" and "cannot run here: trains a network" in skipped["method_info"]
    info = json.loads(rows.loc[("anomalib:Padim", "2"), "method_info"])
    assert info["anomalib"] == "2.7.0" and info["backbone_tensors_copied"] > 0 and info["n_features"] == 100


def test_methods_lists_every_anomalib_model_with_what_it_needs(capsys):
    assert main(["methods"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    assert "anomalib:Patchcore" in listed and "anomalib:Padim" in listed
    assert "anomalib:EfficientAd" in listed and "cannot run here: trains a network" in listed
    assert "anomalib:WinClip" in listed


def test_a_wrong_layer_for_the_backbone_is_one_line_not_random_weights(tiny_loco, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "--seeds", "0",
                 "--preset", "offline", "--image-size", "64", "--metrics", "image", "--out", str(out),
                 "--methods", "anomalib:Patchcore:layers=blocks.2+blocks.6"]) == 0
    row = _rows(out).iloc[0]
    assert row["status"] == "failed" and "lacks" in row["method_info"] and "levels 1-3" in row["method_info"]


def test_without_anomalib_every_model_is_a_skipped_row_saying_what_to_install(tiny_loco, tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "anomalib" else FIND_SPEC(name, *a))
    out = tmp_path / "run"
    assert main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "--seeds", "0",
                 "--preset", "offline", "--image-size", "64", "--metrics", "image", "--out", str(out),
                 "--methods", "anomalib:Patchcore", "patchcore"]) == 0
    rows = _rows(out).set_index("method")
    assert rows.loc["patchcore", "status"] == "ok" and rows.loc["anomalib:Patchcore", "status"] == "skipped"
    assert "anomalib is not installed: pip install 'fewshot-ad-harness[anomalib]'" in \
        rows.loc["anomalib:Patchcore", "method_info"]

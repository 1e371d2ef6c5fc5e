"""End to end on the tiny procedural dataset: run folder, resume, maps, pre-flight and bad input."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runfolder.schema import RunPaths, manifest_key
from submission.cli import main
from submission.config import RunConfig
from submission.runner import run


def _rows(run_dir):
    with open(RunPaths(run_dir).results, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished_run(tiny_loco, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = RunConfig(data=tiny_loco, categories=("pill_tray", "part_slots"), shots=(1, 2), seeds=(42, 0),
                       methods=("patchcore",), preset="offline", image_size=64, out=out, save_maps=True)
    return run(config)


def test_one_ok_row_per_cell_with_metrics(finished_run):
    rows = _rows(finished_run)
    assert len(rows) == 2 * 2 * 2 and {r["status"] for r in rows} == {"ok"}
    row = rows[0]
    assert row["n_good"] == "4" and row["n_logical"] == "3" and row["n_structural"] == "3"
    for column in ("image_auroc", "image_auroc_logical", "image_auroc_structural", "f1_max", "pixel_auroc",
                   "aupro_0.3", "auspro_0.05", "auspro_logical_0.05"):
        assert 0.0 <= float(row[column]) <= 1.0
    assert json.loads(row["method_info"])["backbone"] == "lite0"


def test_manifest_holds_the_vand_support_names(finished_run):
    manifest = json.loads(RunPaths(finished_run).manifest.read_text())
    assert manifest["pill_tray"][manifest_key(2, 42)][:1] == manifest["pill_tray"][manifest_key(1, 42)]
    config = json.loads(RunPaths(finished_run).config.read_text())
    assert config["backbone_passes"]["lite0"] > 0 and config["preset"] == "offline"


def test_scores_csv_per_cell(finished_run):
    with open(RunPaths(finished_run).scores("patchcore", 1, 42, "pill_tray"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [c for c in rows[0]][:5] == ["image", "kind", "label", "score", "path"] and len(rows) == 10
    config = json.loads(RunPaths(finished_run).config.read_text())
    for row in rows:  # the test image, relative to the dataset root
        assert row["path"] == f"pill_tray/test/{row['image']}.png" and (Path(config["data"]) / row["path"]).is_file()


def test_maps_are_saved_at_mask_resolution(finished_run):
    path = RunPaths(finished_run).map("patchcore", 1, 0, "part_slots", "logical_anomalies/000")
    anomaly_map = np.asarray(Image.open(path))
    assert anomaly_map.dtype == np.float32 and anomaly_map.shape == (64, 64)


def test_rerun_skips_finished_cells(finished_run, tiny_loco):
    before = _rows(finished_run)
    config = RunConfig(data=tiny_loco, categories=("pill_tray", "part_slots"), shots=(1, 2, 4), seeds=(42, 0),
                       methods=("patchcore",), preset="offline", image_size=64, out=finished_run)
    run(config)
    after = _rows(finished_run)
    assert after[: len(before)] == before and len(after) == len(before) + 2 * 2  # only the k=4 cells ran


def test_leaderboard_written_by_the_cli(tiny_loco, tmp_path):
    out = tmp_path / "run"
    code = main(["run", "--data", str(tiny_loco), "--categories", "cable_pair", "--shots", "1", "2", "--seeds", "1",
                 "--methods", "patchcore", "--preset", "offline", "--image-size", "64", "--out", str(out)])
    assert code == 0
    paths = RunPaths(out)
    assert paths.leaderboard.is_file() and paths.report.is_file() and paths.plot("f1_vs_k.png").is_file()


def test_paper_preset_without_weights_exits_2(tiny_loco, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "torch"))
    code = main(["run", "--data", str(tiny_loco), "--shots", "1", "--methods", "patchcore", "--out", str(tmp_path / "r")])
    output = capsys.readouterr().out
    assert code == 2 and "wide_resnet50_2" in output and "--preset offline" in output
    assert not RunPaths(tmp_path / "r").results.exists()


@pytest.mark.parametrize("arguments, message", [
    (["--shots", "99"], "not within 1..6"),
    (["--categories", "bottle"], "unknown category 'bottle'"),
    (["--methods", "patchkore"], "unknown method 'patchkore'"),
    (["--methods", "patchcore:neighbours=2"], "unknown key 'neighbours'"),
    (["--weights", "resnet99=x.pth"], "unknown backbone 'resnet99'"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_loco, tmp_path, capsys, arguments, message):
    base = ["run", "--data", str(tiny_loco), "--preset", "offline", "--image-size", "64", "--out", str(tmp_path / "r")]
    code = main(base + arguments)
    output = capsys.readouterr().out
    assert code == 2 and message in output.replace("\n", " ") and "Traceback" not in output


def test_missing_data_folder_exits_2(tmp_path, capsys):
    assert main(["run", "--data", str(tmp_path / "nowhere"), "--preset", "offline", "--out", str(tmp_path / "r")]) == 2
    assert "nowhere: dataset folder is missing" in capsys.readouterr().out.replace("\n", "")


def test_methods_command_lists_weights(capsys):
    assert main(["methods"]) == 0
    assert "patchcore" in capsys.readouterr().out


def _scores(run_dir, variant, cell, category):
    with open(RunPaths(run_dir).scores(variant, *cell, category), newline="") as handle:
        return list(csv.DictReader(handle))


def test_fusion_reuses_the_members_test_predictions(tiny_loco, tmp_path, monkeypatch):
    from methods.fusion import Fusion

    def refuse(self, images):
        raise AssertionError("fusion ran its members on the test set again")

    monkeypatch.setattr(Fusion, "predict", refuse)  # the runner must go through `combine`
    common = dict(data=tiny_loco, categories=("pill_tray",), shots=(2,), seeds=(0,), preset="offline",
                  image_size=64, out=tmp_path)
    run(RunConfig(methods=("patchcore",), **common))
    run(RunConfig(methods=("patchcore", "fusion"), **common))  # patchcore's cell is done: refitted, predicted once
    rows = _rows(tmp_path)
    assert [(r["method"], r["status"]) for r in rows] == [("patchcore", "ok"), ("fusion", "ok")]
    member = _scores(tmp_path, "patchcore", (2, 0), "pill_tray")
    fused = _scores(tmp_path, "fusion", (2, 0), "pill_tray")
    stats = json.loads(rows[1]["method_info"])["stats"]["patchcore"]
    expected = [(float(r["score"]) - stats["mean"]) / stats["std"] for r in member]
    assert [float(r["score"]) for r in fused] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert [float(r["z_patchcore"]) for r in fused] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_a_fusion_fuses_the_members_its_own_rule_chooses():
    """One rule (fusion's `choose_members`, declared to the registry) decides the members for the pre-flight,
    the worker (which members a pending fusion refits) and `Fusion.fit`."""
    from submission.preflight import members_of, preflight

    variants = preflight(("patchcore", "simplenet", "fusion:members=patchcore", "fusion"), "offline", {})
    by_spec = {v.spec: v for v in variants}
    assert [v.spec for v in members_of(by_spec["fusion:members=patchcore"], variants)] == ["patchcore"]
    assert [v.spec for v in members_of(by_spec["fusion"], variants)] == ["patchcore"]  # cheap-fit members only
    with pytest.raises(ValueError, match="simplenet"):
        members_of(by_spec["fusion"], [by_spec["simplenet"]])
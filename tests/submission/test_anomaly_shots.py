"""The `--anomaly-shots m` track: the seeded stratified draw, the cell's test set without the drawn anomalies for
every method, the anomalies given only to methods that use them, the manifest, bad input and resume."""
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from methods import registry
from methods.base import Prediction
from runfolder.schema import RESULT_COLUMNS, RunPaths, anomalies_key, cell_key, manifest_key
from submission.anomaly_shots import anomaly_indices
from submission.cli import main
from submission.config import RunConfig
from submission.datasets.images import load_image
from submission.datasets import records
from submission.errors import HarnessError
from submission.run_folder import RunFolder
from submission.runner import run

CATEGORY = "pill_tray"


@dataclass(frozen=True)
class PeekConfig:
    pass


class Peek:
    """A training-free double that reports, in its method_info, the labelled anomalies its fit context held."""

    name = "peek"

    def __init__(self, config: PeekConfig) -> None:
        self.config, self.seen = config, None

    def fit(self, support, *, category, context):
        anomalies = context.anomalies
        if anomalies is not None:
            masks = anomalies.masks
            self.seen = {"count": len(anomalies.images), "image_means": anomalies.images.mean(dim=(1, 2, 3)).tolist(),
                         "mask_shape": list(masks.shape), "mask_values": sorted(masks.unique().tolist()),
                         "mask_pixels": masks.sum(dim=(1, 2)).tolist()}

    def predict(self, images):
        return Prediction(scores=images.mean(dim=(1, 2, 3)), maps=images.mean(dim=1))

    def info(self):
        return {"anomalies": self.seen}


@pytest.fixture
def doubles():
    """`peek` (registered with uses_anomalies) and `blind` (the same class without it)."""
    presets = {"paper": PeekConfig(), "offline": PeekConfig()}
    registry.register("peek", config=PeekConfig, presets=presets, summary="test double", uses_anomalies=True)(Peek)
    registry.register("blind", config=PeekConfig, presets=presets, summary="test double")(Peek)
    yield
    registry._REGISTRY.pop("peek")
    registry._REGISTRY.pop("blind")


def _config(data, out, m, **overrides):
    options = dict(data=data, categories=(CATEGORY,), shots=(1, 2), seeds=(42,), methods=("peek", "blind"),
                   preset="offline", image_size=64, out=out, anomaly_shots=m)
    return RunConfig(**{**options, **overrides})


def _rows(run_dir):
    with open(RunPaths(run_dir).results, newline="") as handle:
        return list(csv.DictReader(handle))


def _scored(run_dir, variant, k, seed=42):
    with open(RunPaths(run_dir).scores(variant, k, seed, CATEGORY), newline="") as handle:
        return [row["image"] for row in csv.DictReader(handle)]


def _item(name, kind=None, defect=None, label=1):
    return records.TestItem(name, Path(f"{name}.png"), defect or name.split("/")[0], label, kind)


LOCO = [_item(f"good/{i:03}", label=0) for i in range(4)] + [
    _item(f"logical_anomalies/{i:03}", "logical") for i in range(5)] + [
    _item(f"structural_anomalies/{i:03}", "structural") for i in range(3)]


def test_draw_is_seeded_nested_over_m_and_stratified_by_kind():
    for seed in (42, 0, 1234, -7):
        drawn = anomaly_indices(LOCO, 6, seed)
        assert anomaly_indices(LOCO, 6, seed) == drawn and anomaly_indices(LOCO, 3, seed) == drawn[:3]  # seeded, nested
        assert len(set(drawn)) == 6 and all(LOCO[i].label == 1 for i in drawn)
        kinds = [LOCO[i].kind for i in drawn]
        assert sorted(kinds[:2]) == ["logical", "structural"]  # m=2: one of each kind
        assert kinds.count("structural") == 3  # m=6 takes every structural one before a 4th logical
    assert len({anomaly_indices(LOCO, 2, seed) for seed in range(8)}) > 1  # the seed matters
    assert anomaly_indices(LOCO, 0, 42) == ()
    with pytest.raises(HarnessError, match="only 8 anomalous"):
        anomaly_indices(LOCO, 9, 42)


def test_draw_without_kinds_is_stratified_by_defect_folder_and_leaves_the_global_rng_alone():
    defects = ("crack", "hole", "scratch")
    items = [_item("good/000", label=0)] + [_item(f"{d}/{i:03}") for d in defects for i in range(4)]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    drawn = anomaly_indices(items, 3, 0)
    assert torch.equal(torch.rand(3), expected)  # the support draw's torch.manual_seed stream is untouched
    assert sorted(items[i].defect for i in drawn) == ["crack", "hole", "scratch"]


@pytest.fixture
def two_runs(doubles, tiny_loco, tmp_path):
    """The same grid with m=0 and m=2."""
    return run(_config(tiny_loco, tmp_path / "m0", 0)), run(_config(tiny_loco, tmp_path / "m2", 2))


def test_m0_is_the_vand_protocol(two_runs):
    plain, _ = two_runs
    manifest = json.loads(RunPaths(plain).manifest.read_text())
    assert set(manifest[CATEGORY]) == {manifest_key(1, 42), manifest_key(2, 42)}  # no labelled anomalies recorded
    for row in _rows(plain):
        assert row["anomaly_shots"] == "0" and (row["n_good"], row["n_logical"], row["n_structural"]) == ("4", "3", "3")
        assert json.loads(row["method_info"])["anomalies"] is None  # nobody got any
    assert len(_scored(plain, "peek", 1)) == len(_scored(plain, "blind", 2)) == 10


def test_m2_removes_the_drawn_anomalies_for_every_method_and_gives_them_only_to_users(two_runs, tiny_loco):
    plain, track = two_runs
    manifest = json.loads(RunPaths(track).manifest.read_text())[CATEGORY]
    drawn = manifest[anomalies_key(1, 42)]
    assert manifest[anomalies_key(2, 42)] == drawn  # the draw does not depend on k
    assert sorted(name.split("/")[0] for name in drawn) == ["logical_anomalies", "structural_anomalies"]
    plain_manifest = json.loads(RunPaths(plain).manifest.read_text())[CATEGORY]
    assert manifest[manifest_key(2, 42)] == plain_manifest[manifest_key(2, 42)]  # the support draw is unchanged
    everything = set(_scored(plain, "peek", 1))
    for variant in ("peek", "blind"):
        for k in (1, 2):
            assert set(_scored(track, variant, k)) == everything - set(drawn)  # no labelled anomaly is tested
    rows = {(r["method"], r["k"]): r for r in _rows(track)}
    for row in rows.values():
        assert row["status"] == "ok" and row["anomaly_shots"] == "2"
        assert (row["n_good"], row["n_logical"], row["n_structural"]) == ("4", "2", "2")
    assert json.loads(rows["blind", "1"]["method_info"])["anomalies"] is None
    seen = json.loads(rows["peek", "1"]["method_info"])["anomalies"]
    assert seen["count"] == 2 and seen["mask_shape"] == [2, 64, 64] and seen["mask_values"] == [0.0, 1.0]
    images = [load_image(tiny_loco / CATEGORY / "test" / f"{name}.png", 64)[0] for name in drawn]
    assert np.allclose(seen["image_means"], [float(image.mean()) for image in images], atol=1e-6)
    for name, pixels in zip(drawn, seen["mask_pixels"]):  # each image's own masks (their union; 64 px as the run)
        folder = tiny_loco / CATEGORY / "ground_truth" / name
        union = np.any(np.stack([np.asarray(Image.open(p)) > 0 for p in sorted(folder.glob("*.png"))]), axis=0)
        assert union.shape == (64, 64) and pixels == union.sum() > 0


def test_resume_keeps_m_fixed_per_run_folder(two_runs, tiny_loco):
    _, track = two_runs
    before = RunPaths(track).results.read_text()
    run(_config(tiny_loco, track, 2))  # every cell is done: nothing runs again
    assert RunPaths(track).results.read_text() == before
    with pytest.raises(HarnessError, match=r"other run settings \(--anomaly-shots: 2 recorded, 1 now\)"):
        run(_config(tiny_loco, track, 1))


@pytest.mark.parametrize("m, message", [
    ("6", "--anomaly-shots 6: category 'pill_tray' has 6 anomalous test images; m must be below that"),
    ("-1", "--anomaly-shots -1: must be an integer >= 0"),
])
def test_too_many_anomalies_is_one_line_before_any_cell(doubles, tiny_loco, tmp_path, capsys, m, message):
    out = tmp_path / "run"
    code = main(["run", "--data", str(tiny_loco), "--categories", CATEGORY, "--methods", "blind", "--preset", "offline",
                 "--image-size", "64", "--out", str(out), "--anomaly-shots", m])
    printed = capsys.readouterr().out.strip()
    assert code == 2 and message in printed and len(printed.splitlines()) == 1
    assert not RunPaths(out).results.exists()


def test_a_category_without_anomalies_is_one_line_before_any_cell(doubles, tmp_path, capsys):
    data = tmp_path / "data" / "plain" / "good"
    data.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(data / f"{i:03}.png")
    out = tmp_path / "run"
    code = main(["run", "--data", str(tmp_path / "data"), "--format", "folder", "--shots", "1", "--methods", "blind",
                 "--preset", "offline", "--image-size", "32", "--out", str(out), "--anomaly-shots", "1"])
    printed = capsys.readouterr().out.strip()
    assert code == 2 and "has no anomalous test image" in printed and len(printed.splitlines()) == 1
    assert not RunPaths(out).results.exists()


def test_a_results_csv_from_before_the_column_resumes_as_m0(tmp_path):
    earlier = [c for c in RESULT_COLUMNS if c != "anomaly_shots"]
    row = {"method": "patchcore", "preset": "offline", "category": CATEGORY, "k": "1", "seed": "42", "status": "ok"}
    folder = RunFolder(tmp_path)
    folder.results.write_text(",".join(earlier) + "\n" + ",".join(row.get(c, "") for c in earlier) + "\n")
    assert {cell_key(r) for r in folder.finished_rows()} == {("patchcore", "offline", CATEGORY, "1", "42")}
    folder.append_result({**row, "seed": 0, "anomaly_shots": 0})  # appended in the file's own columns
    lines = folder.results.read_text().splitlines()
    assert len(lines) == 3 and all(len(next(csv.reader([line]))) == len(earlier) for line in lines)
    with pytest.raises(HarnessError, match="anomaly_shots=2 needs a new --out"):
        folder.append_result({**row, "seed": 1, "anomaly_shots": 2})


def test_a_track_run_is_not_packaged_as_a_vand_bundle(two_runs, tmp_path):
    from submission.packaging import package_bundle

    with pytest.raises(HarnessError, match="--anomaly-shots 2 cannot be packaged"):
        package_bundle(two_runs[1], "peek", tmp_path / "dist")

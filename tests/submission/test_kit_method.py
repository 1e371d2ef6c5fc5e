"""`--methods vand:DIR`: a VAND kit submission folder run unchanged, beside and fused with a built-in, with the
harness's F1-max per (k, seed) equal to the kit-protocol evaluation of the same folder (`evaluate`)."""
from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from runfolder.schema import RunPaths
from submission.cli import main
from submission.kit_eval import evaluate

KIT_MODEL = '''
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


class Model(nn.Module):
    """A kit-format model: colour statistics of 16 x 16 cells against the few-shot samples'."""

    def __init__(self):
        super().__init__()
        self.register_buffer("memory", torch.zeros(1, 3))

    def weights_url(self, category):
        return {weights_url!r}

    def setup(self, data):
        samples = data["few_shot_samples"]
        self.memory = F.avg_pool2d(samples, 16).flatten(2).transpose(1, 2).reshape(-1, 3)

    def forward(self, images):
        cells = F.avg_pool2d(images, 16)
        b, _, h, w = cells.shape
        distance = torch.cdist(cells.flatten(2).transpose(1, 2).reshape(-1, 3), self.memory).min(dim=1).values
        maps = F.interpolate(distance.view(b, 1, h, w), size=images.shape[-2:], mode="bilinear")
        return SimpleNamespace(pred_score=distance.view(b, -1).max(dim=1).values, anomaly_map=maps)
'''


def _kit(tmp_path, weights_url=None, source=None):
    folder = tmp_path / "kit_submission"
    folder.mkdir()
    (folder / "model.py").write_text(source or KIT_MODEL.format(weights_url=weights_url))
    return folder


def test_a_kit_folder_runs_fuses_and_matches_the_kit_evaluation(tiny_loco, tmp_path):
    kit = _kit(tmp_path)
    out = tmp_path / "run"
    spec = f"vand:{kit}"
    assert main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "2", "--seeds", "42",
                 "0", "--preset", "offline", "--image-size", "256", "--out", str(out),
                 "--methods", spec, "patchcore", f"fusion:members={spec}+patchcore"]) == 0
    rows = pd.read_csv(RunPaths(out).results, dtype=str, keep_default_na=False)
    assert set(rows["status"]) == {"ok"} and len(rows) == 12
    kit_rows = rows[rows["method"] == spec]
    assert all(kit_rows["pixel_auroc"] != "")  # it returns maps: pixel metrics apply
    assert json.loads(kit_rows["method_info"].iloc[0])["resolved_dir"] == str(kit.resolve())
    kit_eval = evaluate(kit, tiny_loco, categories=["pill_tray"], shots=[1, 2], seeds=[42, 0], out=tmp_path / "eval",
                        device="cpu")
    official = {(c.seed, c.k): c.image_score for c in kit_eval.cells}
    harness = {(int(r["seed"]), int(r["k"])): float(r["f1_max"]) for _, r in kit_rows.iterrows()}
    assert harness.keys() == official.keys()
    assert all(abs(harness[key] - official[key]) < 5e-3 for key in harness), (harness, official)


def test_a_kit_weights_url_is_loaded_from_the_kits_download_place_else_skipped_with_the_url(
        tiny_loco, tmp_path, monkeypatch):
    """The kit's evaluator downloads `weights_url` to the temporary folder under the URL's last part and loads it
    there; the harness never downloads: absent, the rows are skipped with the URL; present, it is loaded."""
    import torch

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    kit = _kit(tmp_path, weights_url="https://example.org/kit_weights.pth")
    command = ["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "--seeds", "0",
               "--preset", "offline", "--image-size", "64", "--metrics", "image", "--methods", f"vand:{kit}"]
    assert main([*command, "--out", str(tmp_path / "absent")]) == 0
    row = pd.read_csv(RunPaths(tmp_path / "absent").results, dtype=str, keep_default_na=False).iloc[0]
    assert row["status"] == "skipped"
    assert "https://example.org/kit_weights.pth" in row["method_info"]
    assert f"curl -L -o {tmp_path / 'tmp' / 'kit_weights.pth'}" in row["method_info"]
    torch.save({"memory": torch.full((1, 3), 7.0)}, tmp_path / "tmp" / "kit_weights.pth")
    assert main([*command, "--out", str(tmp_path / "present")]) == 0
    row = pd.read_csv(RunPaths(tmp_path / "present").results, dtype=str, keep_default_na=False).iloc[0]
    assert row["status"] == "ok"


def test_a_kit_model_that_needs_anomalib_says_what_to_install(tiny_loco, tmp_path, capsys, monkeypatch):
    for name in [n for n in sys.modules if n == "anomalib" or n.startswith("anomalib.")] or ["anomalib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed (make install brings it)
    kit = _kit(tmp_path, source="from anomalib.data import ImageBatch\n")
    assert main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "--seeds", "0",
                 "--preset", "offline", "--out", str(tmp_path / "run"), "--methods", f"vand:{kit}"]) == 2
    assert "model.py imports anomalib, which is not installed: pip install 'fewshot-ad-harness[anomalib]'" in \
        " ".join(capsys.readouterr().out.split())


def test_vand_needs_a_folder_with_model_py(tmp_path, capsys):
    assert main(["run", "--methods", "vand", "--out", str(tmp_path / "a")]) == 2
    assert "vand needs the kit submission directory: --methods vand:DIR" in " ".join(capsys.readouterr().out.split())
    assert main(["run", "--methods", f"vand:{tmp_path}", "--out", str(tmp_path / "b")]) == 2
    assert "no model.py there" in " ".join(capsys.readouterr().out.split())


def test_a_kit_variant_packages_as_its_own_folder_and_verifies(tiny_loco, tmp_path, capsys):
    import tarfile

    kit = _kit(tmp_path)
    out, spec = tmp_path / "run", f"vand:{kit}"
    assert main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "2", "--seeds", "0",
                 "--preset", "offline", "--image-size", "256", "--metrics", "image", "--out", str(out),
                 "--methods", spec, "patchcore", f"fusion:members={spec}+patchcore"]) == 0
    dist = tmp_path / "dist"
    assert main(["package", str(out), "--method", spec, "--dist", str(dist)]) == 0
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        shipped = tar.extractfile("bundle/model.py").read()
    assert shipped == (kit / "model.py").read_bytes()  # the kit's own entry point, unchanged
    assert {"bundle/bundle.json", "bundle/run/config.json", "bundle/SHA256SUMS"} <= names
    assert not any(name.startswith("bundle/methods") for name in names)  # no harness inside: the kit is the bundle
    capsys.readouterr()
    assert main(["verify", str(archive)]) == 0, capsys.readouterr().out
    assert main(["package", str(out), "--method", f"fusion:members={spec}+patchcore", "--dist", str(dist)]) == 2
    assert "a fusion with a vand: member cannot be packaged" in " ".join(capsys.readouterr().out.split())

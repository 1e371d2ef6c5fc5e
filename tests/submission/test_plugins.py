"""Methods from outside the repository: a plugin file runs beside the built-ins and fuses with them, config.json
records its digest and a changed plugin stops a resume; broken plugins, an installed entry point, a shadowing
folder and the contract check, each as a user meets them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from methods import registry
from runfolder.schema import RunPaths
from submission.cli import main
from submission.contract import check_method

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = '''
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.base import Prediction
from methods.registry import register


@dataclass(frozen=True)
class ColourConfig:
    pool: int = 8
    batch_norm: bool = False  # True: standardise scores over the test batch (breaks the VAND rule)


class Colour:
    name = "colour_nn"

    def __init__(self, config):
        self.config = config

    def fit(self, support, *, category, context):
        self.memory = F.avg_pool2d(support, self.config.pool).flatten(2).transpose(1, 2).reshape(-1, 3)

    def predict(self, images):
        patches = F.avg_pool2d(images, self.config.pool)
        b, _, h, w = patches.shape
        distances = torch.cdist(patches.flatten(2).transpose(1, 2).reshape(-1, 3), self.memory).min(dim=1).values
        scores = distances.view(b, h * w).max(dim=1).values
        if self.config.batch_norm:
            scores = (scores - scores.mean()) / (scores.std(correction=0) + 1e-6)
        return Prediction(scores=scores)

    def info(self):
        return {"pool": self.config.pool, "batch_norm": self.config.batch_norm}


register("colour_nn", config=ColourConfig, presets={"paper": ColourConfig(), "offline": ColourConfig()},
         summary="nearest patch colour (a test plugin)")(Colour)
'''


def forget_plugins() -> None:
    """Remove what --plugin files registered and imported in this process (tests only)."""
    for name in [n for n, e in registry._REGISTRY.items() if e.source.startswith("--plugin")]:
        del registry._REGISTRY[name]
    for module in [m for m in sys.modules if m.startswith("fewshot_ad_plugin_")]:
        del sys.modules[module]


@pytest.fixture
def plugin(tmp_path):
    """A plugin file; what it registered is removed from this process's registry afterwards."""
    path = tmp_path / "colour_plugin.py"
    path.write_text(PLUGIN)
    yield path
    forget_plugins()


def _run(tiny_loco, out, plugin, *extra):
    return main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "2", "--seeds", "0",
                 "--preset", "offline", "--image-size", "64", "--metrics", "image", "--out", str(out),
                 "--plugin", str(plugin), "--methods", "colour_nn", "patchcore", "fusion:members=colour_nn+patchcore",
                 *extra])


def test_a_plugin_runs_beside_the_builtins_fuses_and_a_changed_plugin_stops_a_resume(plugin, tiny_loco, tmp_path,
                                                                                      capsys):
    out = tmp_path / "run"
    assert _run(tiny_loco, out, plugin) == 0
    rows = pd.read_csv(RunPaths(out).results, dtype=str, keep_default_na=False)
    assert sorted(set(rows["method"])) == ["colour_nn", "fusion:members=colour_nn+patchcore", "patchcore"]
    assert set(rows["status"]) == {"ok"} and len(rows) == 6
    fused = json.loads(rows.loc[rows["method"].str.startswith("fusion"), "method_info"].iloc[0])["fused"]
    assert fused == ["colour_nn", "patchcore"]
    recorded = json.loads(RunPaths(out).config.read_text())
    assert recorded["plugins"][0]["methods"] == ["colour_nn"]
    assert recorded["settings"]["plugins"] == {str(plugin.resolve()): recorded["plugins"][0]["digest"]}
    capsys.readouterr()
    assert _run(tiny_loco, out, plugin) == 0  # unchanged: resumes, nothing to do
    plugin.write_text(PLUGIN.replace("pool: int = 8", "pool: int = 4"))
    before = RunPaths(out).config.read_text()
    assert _run(tiny_loco, out, plugin) == 2
    line = " ".join(capsys.readouterr().out.split())
    assert f"--plugin: {plugin.resolve()} as it was recorded, changed now" in line
    assert RunPaths(out).config.read_text() == before


@pytest.mark.parametrize("source, problem", [
    ("raise RuntimeError('no GPU library here')", "cannot be imported (RuntimeError: no GPU library here)"),
    ("import nonexistent_package_xyz", "cannot be imported (ModuleNotFoundError"),
    (PLUGIN.replace('register("colour_nn"', 'register("patchcore"'), "'patchcore' is registered already (by builtin)"),
    ("x = 1", "registers no method"),
    (PLUGIN.replace("    def predict(self, images):", "    def score(self, images):"),
     "breaks the method protocol: Colour has no predict()"),
    (PLUGIN.replace("    pool: int = 8", "    pool: int = 8\n    backbone: str = 'dinov2_own_loader'"),
     "declares its weight files with register(..., requires=...)"),
])
def test_a_broken_plugin_is_one_line_before_any_cell(source, problem, plugin, tiny_loco, tmp_path, capsys):
    plugin.write_text(source)
    assert _run(tiny_loco, tmp_path / "run", plugin) == 2
    out = capsys.readouterr().out
    assert problem in " ".join(out.split()) and str(plugin) in " ".join(out.split()).replace("\n", "")
    assert len(out.strip().splitlines()) <= 3 and not RunPaths(tmp_path / "run").results.exists()


def _child(arguments, cwd, extra_path=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "submission", *arguments], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_an_installed_entry_point_is_listed_and_a_broken_one_is_one_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "colour_package.py").write_text(PLUGIN)
    info = site / "colour_package-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: colour-package\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fewshot_ad_harness.methods]\ncolour = colour_package\n")
    child = _child(["methods"], tmp_path, site)
    assert child.returncode == 0, child.stderr
    listed = [line for line in child.stdout.splitlines() if line.startswith("colour_nn")]
    assert listed and "entry point colour (colour-package 0.1)" in listed[0]
    (site / "colour_package.py").write_text("raise ImportError('torch_scatter is missing')")
    child = _child(["methods"], tmp_path, site)
    assert child.returncode == 2
    assert "entry point colour (colour-package 0.1): cannot be imported (ImportError: torch_scatter is missing)" in \
        " ".join(child.stdout.split())


def test_a_shadowing_folder_is_named_in_one_line(tmp_path):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("")  # the entrant's own methods package
    child = _child(["methods"], tmp_path, None)
    assert child.returncode == 2
    message = " ".join(child.stderr.split())
    assert f"{tmp_path / 'methods'} shadows the harness's package 'methods' ({ROOT / 'methods'})" in message


def test_check_method_fails_a_method_that_normalises_over_its_batch(plugin):
    good = {c.name: c for c in check_method("colour_nn", bundle=False, plugins=(str(plugin),))}
    assert all(c.passed for c in good.values()) and len(good) == 6
    bad = {c.name: c for c in check_method("colour_nn:batch_norm=true", bundle=False)}
    assert not bad["batch independence"].passed and "with its batch-mates" in bad["batch independence"].detail
    assert bad["batch independence"].detail.split(":")[0] in {"good/000", "good/001", "good/002",
                                                              "logical_anomalies/000", "logical_anomalies/001",
                                                              "structural_anomalies/000", "structural_anomalies/001"}
    assert all(c.passed for name, c in bad.items() if name != "batch independence")


def test_a_plugin_bundle_carries_its_code_and_runs_with_the_plugin_gone(plugin, tiny_loco, tmp_path):
    """package copies the plugin's source into the bundle (and nothing else of its folder); verify and the VAND
    evaluation run the bundle in fresh processes after the plugin file is removed from its first place."""
    import tarfile

    (plugin.parent / "unrelated_notes.txt").write_text("the user's other files stay out of the bundle")
    out = tmp_path / "run"
    assert _run(tiny_loco, out, plugin) == 0
    dist = tmp_path / "dist"
    assert main(["package", str(out), "--method", "fusion:members=colour_nn+patchcore", "--dist", str(dist)]) == 0
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "bundle/plugins/colour_plugin.py" in names and not any("unrelated_notes" in n for n in names)
    plugin.unlink()  # the plugin is gone from where it was: only the bundle's copy can serve
    child = _child(["verify", str(archive)], tmp_path, None)
    assert child.returncode == 0, child.stdout + child.stderr
    evaluated = _child(["evaluate", str(archive), "--data", str(tiny_loco), "--categories", "pill_tray",
                        "--shots", "1", "--seeds", "0", "--out", str(tmp_path / "eval"), "--device", "cpu"],
                       tmp_path, None)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert (tmp_path / "eval" / "metrics.csv").is_file()

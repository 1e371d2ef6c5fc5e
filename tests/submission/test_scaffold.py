"""`new-method` end to end, as an entrant would: the package it writes installs with pip, is listed through its
entry point, runs in a grid beside PatchCore and fused with it, passes its own contract test, is packaged, and its
bundle verifies and is evaluated after the package is uninstalled."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from submission.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _child(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _scores(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(run_dir)): pd.read_csv(p) for p in sorted((run_dir / "scores").rglob("*.csv"))}


def _pip(*arguments: str, cwd: Path) -> None:
    child = _child("-m", "pip", "--disable-pip-version-check", "-q", *arguments, cwd=cwd)
    assert child.returncode == 0, child.stdout + child.stderr


def test_a_scaffolded_method_installs_runs_fuses_checks_packages_and_verifies(tiny_loco, tmp_path, capsys):
    package = tmp_path / "demo_pkg"
    assert main(["new-method", "scaffold_demo", "--dir", str(package)]) == 0
    assert main(["new-method", "scaffold_demo", "--dir", str(package)]) == 2  # never over an existing package
    assert "exists and is not empty" in " ".join(capsys.readouterr().out.split())
    _pip("install", "--no-deps", "--no-build-isolation", "-e", str(package), cwd=tmp_path)
    try:
        listed = _child("-m", "submission", "methods", cwd=tmp_path)
        assert "scaffold_demo [entry point scaffold_demo (scaffold-demo-method 0.1.0)]" in listed.stdout
        out = tmp_path / "run"
        run = _child("-m", "submission", "run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1",
                     "2", "--seeds", "0", "--preset", "offline", "--image-size", "64", "--metrics", "image",
                     "--methods", "scaffold_demo", "patchcore", "fusion:members=scaffold_demo+patchcore",
                     "--out", str(out), cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        rows = (out / "results.csv").read_text().splitlines()[1:]
        assert len(rows) == 6 and all(",ok," in row for row in rows)
        on_ray = _child("-m", "submission", "run", *run.args[4:-2], "--out", str(tmp_path / "ray"), "--executor", "ray",
                        cwd=tmp_path)  # Ray workers import the installed package the same way
        assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
        ray_scores, local_scores = _scores(tmp_path / "ray"), _scores(out)
        assert ray_scores.keys() == local_scores.keys()
        for name, frame in local_scores.items():  # a worker's feature batches hold other images: float rounding
            pd.testing.assert_frame_equal(ray_scores[name], frame, rtol=1e-4)
        contract = _child("-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests"), cwd=tmp_path)
        assert contract.returncode == 0, contract.stdout + contract.stderr
        packaged = _child("-m", "submission", "package", str(out), "--method", "scaffold_demo",
                          "--dist", str(tmp_path / "dist"), cwd=tmp_path)
        assert packaged.returncode == 0, packaged.stdout + packaged.stderr
    finally:
        _pip("uninstall", "-y", "scaffold-demo-method", cwd=tmp_path)
    (archive,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        assert "bundle/plugins/scaffold_demo_method.py" in tar.getnames()
    assert "scaffold_demo" not in _child("-m", "submission", "methods", cwd=tmp_path).stdout  # uninstalled
    verified = _child("-m", "submission", "verify", str(archive), cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    evaluated = _child("-m", "submission", "evaluate", str(archive), "--data", str(tiny_loco), "--categories",
                       "pill_tray", "--shots", "1", "--seeds", "0", "--device", "cpu", "--out", str(tmp_path / "eval"),
                       cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr


@pytest.mark.parametrize("name", ["Bad-Name", "class", "1st"])
def test_a_bad_method_name_is_one_line(name, tmp_path, capsys):
    assert main(["new-method", name, "--dir", str(tmp_path / "x")]) == 2
    assert "a method name is lower case letters" in " ".join(capsys.readouterr().out.split())

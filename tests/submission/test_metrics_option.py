"""`--metrics image`: the image metrics of `--metrics all`, and no pixel value in any row; a bad value is one line."""
import csv
import math

import pytest

from runfolder.schema import RunPaths
from submission.cli import main
from submission.config import RunConfig
from submission.errors import HarnessError

PIXEL = ("pixel_auroc", "aupro_0.3", "auspro_0.05", "auspro_logical_0.05", "auspro_structural_0.05")
IMAGE = ("image_auroc", "image_auroc_logical", "image_auroc_structural", "f1_max")


def _rows(run_dir):
    with open(RunPaths(run_dir).results, newline="") as handle:
        return {(r["k"], r["seed"]): r for r in csv.DictReader(handle)}


def _run(tiny_loco, out, metrics):
    return main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "2", "--seeds", "0",
                 "--methods", "patchcore", "--preset", "offline", "--image-size", "64", "--out", str(out),
                 "--metrics", metrics])


def test_image_only_run_has_the_same_image_metrics_and_no_pixel_values(tiny_loco, tmp_path):
    assert _run(tiny_loco, tmp_path / "all", "all") == 0
    assert _run(tiny_loco, tmp_path / "image", "image") == 0  # the leaderboard is written from empty pixel columns
    full, image_only = _rows(tmp_path / "all"), _rows(tmp_path / "image")
    assert full.keys() == image_only.keys() and len(full) == 2
    for cell, row in image_only.items():
        assert row["status"] == "ok"
        assert all(row[column] == "" for column in PIXEL), row
        assert all(0.0 <= float(full[cell][column]) <= 1.0 for column in PIXEL)  # --metrics all does fill them
        for column in IMAGE:
            assert math.isclose(float(row[column]), float(full[cell][column]), abs_tol=1e-12), column
    assert RunPaths(tmp_path / "image").leaderboard.is_file()
    # resuming the image-only folder with every metric would keep its empty pixel cells as finished: refused
    assert _run(tiny_loco, tmp_path / "image", "all") == 2


def test_a_bad_metrics_value_is_one_line_exit_2(tiny_loco, tmp_path, capsys):
    out = tmp_path / "run"
    code = _run(tiny_loco, out, "pixel")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "argument --metrics: invalid choice: 'pixel'" in lines[0], lines
    assert not out.exists()


def test_run_config_checks_metrics():
    assert RunConfig().metrics == "all"
    with pytest.raises(HarnessError, match=r"--metrics 'pixels': choose one of all, image"):
        RunConfig(metrics="pixels")

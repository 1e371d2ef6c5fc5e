import re

import pandas as pd
import pytest

from leaderboard.__main__ import main
from leaderboard.show import write_report
from runfolder.schema import RunPaths
from submission.config import RunConfig
from submission.runner import run


@pytest.fixture
def run_dir(tiny_run):
    return tiny_run  # tests/leaderboard/conftest.py: made once, shared with the page's tests


def test_report_figures_exist(run_dir):
    report = write_report(run_dir).read_text()
    for name in ("f1_vs_k.png", "auroc_bars.png", "overlays.png"):
        assert RunPaths(run_dir).plot(name).stat().st_size > 1000 and f"plots/{name}" in report


def test_report_tables_equal_the_csv(run_dir):
    report = write_report(run_dir).read_text()
    board = pd.read_csv(RunPaths(run_dir).leaderboard, dtype={"k": str})
    checked = 0
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 6 or cells[0] != "patchcore" or not cells[2].isdigit():
            continue
        section = [l for l in report[: report.index(line)].splitlines() if l.startswith("## ")][-1][3:]
        row = board[(board.category == section) & (board.k == cells[2])].iloc[0]
        f1, f1_std = map(float, re.findall(r"[\d.]+", cells[4]))
        assert f1 == pytest.approx(round(row.f1_max, 3), abs=5e-4) and f1_std == pytest.approx(round(row.f1_max_std, 3), abs=5e-4)
        checked += 1
    assert checked == 2 * 3  # k=1,2 for two categories and overall


def test_report_without_maps_says_so(tiny_loco, tmp_path):
    out = run(RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(42,), methods=("patchcore",),
                        preset="offline", image_size=64, out=tmp_path / "r"))
    assert "rerun with --save-maps" in write_report(out).read_text()


def test_compare_cli(run_dir, capsys):
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    assert "+0.000" in capsys.readouterr().out


def test_shards_merge_into_the_whole_grid(tiny_loco, tmp_path):
    common = dict(data=tiny_loco, categories=("pill_tray",), shots=(1, 2), seeds=(42, 0), methods=("patchcore",),
                  preset="offline", image_size=64)
    whole = run(RunConfig(**common, out=tmp_path / "whole"))
    shards = [run(RunConfig(**common, out=tmp_path / f"shard{i}", shard=(i, 3))) for i in range(3)]
    assert main(["merge", str(tmp_path / "merged"), *map(str, shards)]) == 0
    merged = pd.read_csv(RunPaths(tmp_path / "merged").results).sort_values(["k", "seed"]).reset_index(drop=True)
    expected = pd.read_csv(RunPaths(whole).results).sort_values(["k", "seed"]).reset_index(drop=True)
    assert len(merged) == 4
    pd.testing.assert_series_equal(merged["f1_max"], expected["f1_max"])

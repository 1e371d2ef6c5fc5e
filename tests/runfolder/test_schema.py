"""The run-folder schema: every path is built and parsed by one module, and the parse inverts the build."""
from pathlib import Path

import pytest

from runfolder.schema import (
    CELL_KEY, LOCO_KINDS, LOGICAL, RESULT_COLUMNS, SCORE_COLUMNS, STRUCTURAL, RunPaths, cell_key, cell_name,
    manifest_key, parse_cell_name, relative_image_path,
)


@pytest.mark.parametrize("k, seed", [(1, 42), (16, 0), (4, -3)])
def test_cell_name_round_trip(k, seed):
    assert cell_name(k, seed) == manifest_key(k, seed) == f"k{k}_s{seed}"
    assert parse_cell_name(cell_name(k, seed)) == (k, seed)


@pytest.mark.parametrize("name", ["k1s0", "k_s1", "kx_s1", "k1_s0.csv", "artifacts"])
def test_other_names_are_not_cells(name):
    assert parse_cell_name(name) is None


def test_scores_path_build_and_parse(tmp_path):
    paths = RunPaths(tmp_path)
    path = paths.scores("gcad_regressor_seed", 2, 42, "pill_tray")
    assert path == tmp_path / "scores" / "gcad_regressor_seed" / "k2_s42" / "pill_tray.csv"
    parsed = paths.parse_scores(path)
    assert (parsed.variant, parsed.k, parsed.seed, parsed.category) == ("gcad_regressor_seed", 2, 42, "pill_tray")
    assert paths.parse_scores(tmp_path / "scores" / "gcad" / "notacell" / "a.csv") is None
    assert paths.parse_scores(tmp_path / "results.csv") is None


def test_score_files_lists_only_score_csvs(tmp_path):
    paths = RunPaths(tmp_path)
    for variant, k, seed, category in [("b", 1, 0, "x"), ("a", 2, 1, "y")]:
        paths.scores(variant, k, seed, category).parent.mkdir(parents=True, exist_ok=True)
        paths.scores(variant, k, seed, category).write_text("image\n")
    (tmp_path / "scores" / "a" / "junk").mkdir()
    (tmp_path / "scores" / "a" / "junk" / "z.csv").write_text("")
    found = [(f.variant, f.k, f.seed, f.category) for f, _ in paths.score_files()]
    assert found == [("a", 2, 1, "y"), ("b", 1, 0, "x")]


@pytest.mark.parametrize("item", ["logical_anomalies/003", "good/000", "crack/broken_01"])
def test_map_path_build_and_parse(tmp_path, item):
    paths = RunPaths(tmp_path)
    path = paths.map("patchcore", 1, 0, "part_slots", item)
    assert path == tmp_path / "maps" / "patchcore" / "k1_s0" / "part_slots" / "test" / f"{item}.tiff"
    parsed = paths.parse_map(path)
    assert (parsed.variant, parsed.k, parsed.seed, parsed.category, parsed.item) == ("patchcore", 1, 0, "part_slots", item)
    assert paths.parse_map(path.with_suffix(".png")) is None


def test_map_cells(tmp_path):
    paths = RunPaths(tmp_path)
    for variant, k, seed, category in [("p", 2, 0, "b"), ("p", 2, 0, "a"), ("p", 1, 42, "a")]:
        target = paths.map(variant, k, seed, category, "good/000")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    assert paths.map_cells() == [("p", 1, 42, ["a"]), ("p", 2, 0, ["a", "b"])]


def test_top_level_files(tmp_path):
    paths = RunPaths(tmp_path)
    assert [p.name for p in (paths.config, paths.manifest, paths.results, paths.leaderboard, paths.report)] == [
        "config.json", "manifest.json", "results.csv", "leaderboard.csv", "report.md"]
    assert paths.artifacts("regad") == tmp_path / "artifacts" / "regad" and paths.plot("x.png") == tmp_path / "plots" / "x.png"


def test_columns_kinds_and_key():
    assert CELL_KEY == RESULT_COLUMNS[:5] and RESULT_COLUMNS[-2:] == ("method_info", "anomaly_shots")
    assert SCORE_COLUMNS == ("image", "kind", "label", "score", "path")
    assert LOCO_KINDS == {"logical_anomalies": LOGICAL, "structural_anomalies": STRUCTURAL}
    assert cell_key({"method": "m", "preset": "paper", "category": "a", "k": 1, "seed": 42, "status": "ok"}) == (
        "m", "paper", "a", "1", "42")


def test_relative_image_path_uses_forward_slashes(tmp_path):
    image = tmp_path / "data" / "bottle" / "test" / "crack" / "000.jpg"
    assert relative_image_path(image, tmp_path / "data") == "bottle/test/crack/000.jpg"
    assert (tmp_path / "data" / Path(relative_image_path(image, tmp_path / "data"))) == image

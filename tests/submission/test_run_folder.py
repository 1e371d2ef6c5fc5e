"""RunFolder: rows written whole, a torn last row set aside on resume, bad folders are one-line errors."""
import csv
import json

import pytest

from runfolder.schema import RESULT_COLUMNS, RunPaths, cell_key
from submission.cli import main
from submission.config import RunConfig
from submission.errors import HarnessError
from submission.run_folder import RunFolder


def _row(seed, status="ok"):
    return {"method": "patchcore", "preset": "offline", "category": "a", "k": 1, "seed": seed, "status": status,
            "f1_max": 0.5, "method_info": json.dumps({"backbone": "lite0", "note": "x, y"})}


def _finished_cells(folder):
    return {cell_key(row) for row in folder.finished_rows()}


def _rows(run_dir):
    with open(RunPaths(run_dir).results, newline="") as handle:
        return list(csv.DictReader(handle))


def test_rows_are_appended_whole(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_result(_row(0))
    folder.append_result(_row(1, "failed"))
    lines = folder.results.read_text().splitlines()
    assert lines[0] == ",".join(RESULT_COLUMNS) and len(lines) == 3
    assert _finished_cells(folder) == {("patchcore", "offline", "a", "1", "0")}


def test_torn_last_row_is_set_aside_and_its_cell_not_finished(tmp_path):
    warnings = []
    folder = RunFolder(tmp_path, warn=warnings.append)
    for seed in (0, 1):
        folder.append_result(_row(seed))
    whole = folder.results.read_text()
    folder.results.write_text(whole[:-25])  # a crash while the seed-1 row was written
    assert _finished_cells(folder) == {("patchcore", "offline", "a", "1", "0")}
    assert len(warnings) == 1 and "\n" not in warnings[0] and "line 3" in warnings[0] and "results.csv.torn" in warnings[0]
    torn = RunPaths(tmp_path).results_torn.read_text()
    assert whole[:-25].endswith(torn.rstrip("\n")) and torn.startswith("patchcore,offline,a,1,1,ok")
    folder.append_result(_row(1))  # the cell ran again
    assert [r["seed"] for r in _rows(tmp_path)] == ["0", "1"]
    assert len(_finished_cells(folder)) == 2 and len(warnings) == 1


def test_torn_middle_row_is_a_one_line_error(tmp_path):
    folder = RunFolder(tmp_path)
    for seed in (0, 1, 2):
        folder.append_result(_row(seed))
    lines = folder.results.read_text().splitlines(keepends=True)
    folder.results.write_text(lines[0] + lines[1][:-20] + lines[2] + lines[3])
    with pytest.raises(HarnessError, match=r"results.csv, line 2: .*fix or delete this line") as error:
        _finished_cells(folder)
    assert "\n" not in str(error.value)


def test_out_naming_a_file_is_a_harness_error(tmp_path):
    target = tmp_path / "not_a_folder"
    target.write_text("x")
    with pytest.raises(HarnessError, match="exists and is not a folder"):
        RunFolder(target)
    with pytest.raises(HarnessError, match="cannot create the run folder"):
        RunFolder(target / "run")


def test_cli_out_naming_a_file_exits_2_with_one_line(tiny_loco, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    code = main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "--seeds", "0",
                 "--methods", "patchcore", "--preset", "offline", "--image-size", "64", "--out", str(target)])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == 2 and "exists and is not a folder" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1 and target.read_text() == "keep me"


def test_cli_resume_into_a_folder_torn_in_the_middle_exits_2(tiny_loco, tmp_path, capsys):
    folder = RunFolder(tmp_path / "run")
    for seed in (0, 1, 2):
        folder.append_result(_row(seed))
    lines = folder.results.read_text().splitlines(keepends=True)
    folder.results.write_text(lines[0] + lines[1][:-20] + lines[2] + lines[3])  # a torn row, then more rows
    code = main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "--seeds", "0",
                 "--methods", "patchcore", "--preset", "offline", "--image-size", "64", "--out", str(tmp_path / "run")])
    output = capsys.readouterr().out
    assert code == 2 and "line 2" in output and "Traceback" not in output and "ParserError" not in output


def test_resume_reruns_the_cell_of_a_torn_last_row(tiny_loco, tmp_path, capsys):
    from submission.runner import run

    config = RunConfig(data=tiny_loco, categories=("pill_tray",), shots=(1,), seeds=(0, 1), methods=("patchcore",),
                       preset="offline", image_size=64, out=tmp_path / "run")
    run_dir = run(config)
    before = _rows(run_dir)
    results = RunPaths(run_dir).results
    results.write_text(results.read_text()[:-40])  # the seed-1 row cut short
    run(config)
    after = _rows(run_dir)
    assert "cut short" in capsys.readouterr().err
    assert [(r["seed"], r["status"]) for r in after] == [("0", "ok"), ("1", "ok")]
    assert after[0] == before[0] and float(after[1]["f1_max"]) == pytest.approx(float(before[1]["f1_max"]))
    assert RunPaths(run_dir).results_torn.is_file()

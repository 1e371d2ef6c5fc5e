"""`python -m leaderboard` on a bad run folder: one line naming the file and the problem, exit 2."""
import csv
import io
import json

from leaderboard.__main__ import main
from runfolder.schema import RESULT_COLUMNS, RunPaths


def _line(seed):
    row = {c: "" for c in RESULT_COLUMNS}
    row.update(method="m", preset="offline", category="a", k="1", seed=str(seed), status="ok", f1_max="0.5",
               method_info=json.dumps({"backbone": "lite0"}))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([row[c] for c in RESULT_COLUMNS])
    return buffer.getvalue()


HEADER = ",".join(RESULT_COLUMNS) + "\n"


def _one_line_error(capsys, argv, message):
    code = main(argv)
    output = capsys.readouterr().out
    assert code == 2 and message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


def test_folder_without_results(tmp_path, capsys):
    _one_line_error(capsys, ["show", str(tmp_path)], "no results.csv in this run folder")


def test_results_with_missing_columns(tmp_path, capsys):
    RunPaths(tmp_path).results.write_text("method,preset,status\nm,p,ok\n")
    _one_line_error(capsys, ["show", str(tmp_path)], "lacks the columns category")


def test_results_torn_in_the_middle(tmp_path, capsys):
    RunPaths(tmp_path).results.write_text(HEADER + _line(0)[:-20] + _line(1) + _line(2))
    _one_line_error(capsys, ["show", str(tmp_path)], "results.csv, line 2")


def test_merge_of_a_bad_shard(tmp_path, capsys):
    (tmp_path / "shard").mkdir()
    RunPaths(tmp_path / "shard").results.write_text(HEADER + _line(0)[:-20] + _line(1) + _line(2))
    _one_line_error(capsys, ["merge", str(tmp_path / "out"), str(tmp_path / "shard")], "results.csv, line 2")
    assert not (tmp_path / "out").exists()


def test_torn_last_row_is_left_out_with_a_warning(tmp_path, capsys):
    paths = RunPaths(tmp_path)
    paths.results.write_text(HEADER + _line(0) + _line(1)[:-10])
    assert main(["show", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "line 3: the last row was cut short" in captured.err
    board = paths.leaderboard.read_text()
    assert board.splitlines()[0].endswith(",missing_cells,image_auroc_ci_low,image_auroc_ci_high,f1_max_ci_low,"
                                          "f1_max_ci_high,anomaly_shots")

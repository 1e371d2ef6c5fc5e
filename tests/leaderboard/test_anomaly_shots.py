"""The leaderboard and `--anomaly-shots`: rows with different m are never averaged together, a results.csv from
before the column reads as m = 0, and runs with different m do not merge."""
import json

import pandas as pd
import pytest

from leaderboard.__main__ import main
from leaderboard.aggregate import aggregate, read_results
from leaderboard.render import table_rows
from runfolder.schema import RESULT_COLUMNS, RunPaths


def _rows(f1_by_m):
    return [{"method": "bgad", "preset": "offline", "category": "a", "k": 1, "seed": seed, "status": "ok",
             "f1_max": f1, "image_auroc": f1, "anomaly_shots": m, "method_info": json.dumps({})}
            for m, values in f1_by_m.items() for seed, f1 in zip((42, 0), values)]


def _frame(f1_by_m):
    return pd.DataFrame(_rows(f1_by_m)).reindex(columns=RESULT_COLUMNS)


def _write(folder, rows, columns=RESULT_COLUMNS):
    RunPaths(folder).root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).reindex(columns=list(columns)).to_csv(RunPaths(folder).results, index=False)
    return folder


def test_each_m_is_aggregated_apart_and_named_in_the_tables():
    board = aggregate(_frame({0: (0.5, 0.7), 2: (0.9, 0.9)}))
    cells = board[(board.category == "a") & (board.k == "1")].set_index("anomaly_shots")
    assert cells.loc[0, "f1_max"] == pytest.approx(0.6) and cells.loc[2, "f1_max"] == pytest.approx(0.9)
    assert (cells.n_seeds == 2).all() and list(board.columns)[-1] == "anomaly_shots"
    _, rows = table_rows(board, "a")
    assert {row[0] for row in rows} == {"bgad (m=0)", "bgad (m=2)"}
    _, plain = table_rows(aggregate(_frame({0: (0.5, 0.7)})), "a")
    assert [row[0] for row in plain] == ["bgad"]  # without the track the tables read as before


def test_a_results_csv_from_before_the_column_reads_as_m0(tmp_path):
    earlier = [c for c in RESULT_COLUMNS if c != "anomaly_shots"]
    run = _write(tmp_path / "old", _rows({0: (0.5, 0.7)}), earlier)
    results = read_results(run)
    assert results["anomaly_shots"].tolist() == [0, 0]
    assert main(["show", str(run)]) == 0
    board = pd.read_csv(RunPaths(run).leaderboard)
    assert (board.anomaly_shots == 0).all() and board.columns[-1] == "anomaly_shots"


def test_runs_with_different_m_do_not_merge(tmp_path, capsys):
    shard0 = _write(tmp_path / "m0", _rows({0: (0.5, 0.7)}))
    shard2 = _write(tmp_path / "m2", _rows({2: (0.9, 0.9)}))
    for run in (shard0, shard2):
        RunPaths(run).config.write_text("{}")
    assert main(["merge", str(tmp_path / "out"), str(shard0), str(shard2)]) == 2
    output = capsys.readouterr().out.strip()
    assert "differ in --anomaly-shots (0, 2)" in output and len(output.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    old = _write(tmp_path / "old", _rows({0: (0.6, 0.6)}), [c for c in RESULT_COLUMNS if c != "anomaly_shots"])
    RunPaths(old).config.write_text("{}")
    assert main(["merge", str(tmp_path / "both"), str(shard0), str(old)]) == 0  # an older folder is m = 0
    assert set(pd.read_csv(RunPaths(tmp_path / "both").results).anomaly_shots) == {0}


def test_compare_says_when_the_runs_scored_other_test_sets(tmp_path, capsys):
    from leaderboard.aggregate import read_results
    from leaderboard.compare import anomaly_shots_note

    m0 = _write(tmp_path / "m0", _rows({0: (0.5, 0.7)}))
    m2 = _write(tmp_path / "m2", _rows({2: (0.9, 0.9)}))
    also_m0 = _write(tmp_path / "also_m0", _rows({0: (0.6, 0.6)}))
    assert anomaly_shots_note(read_results(m0), read_results(also_m0)) is None
    assert "A has --anomaly-shots 0, B 2" in anomaly_shots_note(read_results(m0), read_results(m2))
    assert main(["compare", str(m0), str(m2)]) == 0
    assert "different test images" in capsys.readouterr().out

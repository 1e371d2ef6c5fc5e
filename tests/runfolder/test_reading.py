"""results.csv reading: complete rows, a torn last row set apart, a bad row elsewhere a one-line error."""
import csv
import io
import json

import pytest

from runfolder.reading import RunFolderError, read_json, read_results_file
from runfolder.schema import RESULT_COLUMNS


def result_line(**values) -> str:
    """One results.csv line as the harness writes it."""
    row = {c: "" for c in RESULT_COLUMNS}
    row.update(method="patchcore", preset="offline", category="a", k="1", seed="0", status="ok", f1_max="0.5",
               method_info=json.dumps({"backbone": "lite0", "note": "a, b"}))
    row.update({key: str(value) for key, value in values.items()})
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([row[c] for c in RESULT_COLUMNS])
    return buffer.getvalue()


HEADER = ",".join(RESULT_COLUMNS) + "\n"


def test_complete_file(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + result_line(seed=0) + result_line(seed=1))
    table = read_results_file(path)
    assert [r["seed"] for r in table.rows] == ["0", "1"] and table.torn_text is None
    assert table.complete_text == path.read_text()


@pytest.mark.parametrize("cut", [1, 5, 40, 80])
def test_torn_last_row_is_set_apart(tmp_path, cut):
    path = tmp_path / "results.csv"
    whole = HEADER + result_line(seed=0) + result_line(seed=1)
    path.write_text(whole[:-cut])
    table = read_results_file(path)
    assert [r["seed"] for r in table.rows] == ["0"] and table.torn_line == 3
    assert table.complete_text == HEADER + result_line(seed=0)
    assert table.complete_text + table.torn_text == whole[:-cut]


def test_torn_header_leaves_nothing(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER[:30])
    table = read_results_file(path)
    assert table.rows == [] and table.complete_text == "" and table.torn_line == 1


def test_torn_row_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + result_line(seed=0)[:-30] + result_line(seed=1) + result_line(seed=2))
    expected = rf"results.csv, line 2: .*fields where the header has {len(RESULT_COLUMNS)}"
    with pytest.raises(RunFolderError, match=expected) as error:
        read_results_file(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("values, problem", [({"k": "one"}, "k='one' is not an integer"),
                                             ({"f1_max": "high"}, "f1_max='high' is not a number"),
                                             ({"method_info": "{not json"}, "method_info is not valid JSON")])
def test_unparsable_middle_row_is_an_error(tmp_path, values, problem):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + result_line(**values) + result_line(seed=1))
    with pytest.raises(RunFolderError, match=problem):
        read_results_file(path)


def test_missing_columns_and_missing_file(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("method,preset\nm,p\n")
    with pytest.raises(RunFolderError, match="lacks the columns category"):
        read_results_file(path)
    with pytest.raises(RunFolderError, match="no results.csv in this run folder"):
        read_results_file(tmp_path / "nowhere" / "results.csv")


def test_corrupt_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(RunFolderError, match="config.json: not valid JSON"):
        read_json(tmp_path / "config.json")
    assert read_json(tmp_path / "manifest.json", required=False) == {}

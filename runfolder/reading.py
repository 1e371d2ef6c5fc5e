"""Checked reading of a run folder's files: results.csv (with torn-row detection) and its JSON files.

Every problem is a `RunFolderError` (a ValueError) whose one-line message names the file, the line
where there is one, and the problem: never a csv/pandas/json traceback.

results.csv is append-only and every row is written by one flushed, fsynced write ending in a
newline, so a crash can only cut the *last* row short. `read_results_file` returns that torn last
row apart from the complete ones (the caller decides: the runner sets it aside and reruns its cell,
the leaderboard ignores it with a warning); a bad row anywhere else is an error.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runfolder.schema import (ANOMALY_SHOTS, COUNT_COLUMNS, EARLIER_COLUMNS, LATER_COLUMNS, METRIC_COLUMNS,
                              RESULT_COLUMNS, TIMING_COLUMNS)


class RunFolderError(ValueError):
    """A run-folder file is missing or malformed; the message names it and the problem."""


@dataclass(frozen=True)
class ResultsFile:
    """results.csv as read: the complete rows, and the torn last row if the file ends in one."""

    path: Path
    header: tuple[str, ...]  # as on disk: a file written before a `LATER_COLUMNS` column lacks it
    rows: list[dict[str, str]]  # every `RESULT_COLUMNS` key (a missing later column holds its default)
    complete_text: str  # the header and complete rows, byte for byte as on disk
    torn_text: str | None = None  # the last row, cut short
    torn_line: int | None = None  # its line number (1-based)


def _row_problem(fields: list[str], header: tuple[str, ...]) -> str | None:
    """Why a row cannot be a complete results row, or None when it can."""
    if len(fields) != len(header):
        return f"{len(fields)} fields where the header has {len(header)}"
    row = dict(zip(header, fields))
    for column in ("k", "seed"):
        try:
            int(row[column])
        except ValueError:
            return f"{column}={row[column]!r} is not an integer"
    if not row["status"]:
        return "empty status"
    shots = row.get(ANOMALY_SHOTS, LATER_COLUMNS[ANOMALY_SHOTS])
    if shots and not shots.isdigit():  # empty: 0
        return f"anomaly_shots={shots!r} is not a count"
    for column in COUNT_COLUMNS + METRIC_COLUMNS + TIMING_COLUMNS:
        value = row.get(column, "")
        if value == "":
            continue
        try:
            number = float(value)
        except ValueError:
            return f"{column}={value!r} is not a number"
        if column in COUNT_COLUMNS and not (math.isfinite(number) and number == int(number)):
            return f"{column}={value!r} is not a count"
    if row.get("method_info"):
        try:
            json.loads(row["method_info"])
        except json.JSONDecodeError:
            return "method_info is not valid JSON"
    return None


def read_results_file(path: Path) -> ResultsFile:
    """Read and check a results.csv; see the module's docstring for the torn-row policy."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: no {path.name} in this run folder")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: unreadable ({error})") from None
    if not text:
        return ResultsFile(path, RESULT_COLUMNS, [], "")
    lines = list(io.StringIO(text, newline=""))
    ends_complete = text.endswith(("\n", "\r"))
    reader = csv.reader(iter(lines))
    header: tuple[str, ...] | None = None
    rows: list[dict[str, str]] = []
    complete_end = 0  # lines[:complete_end] are the header and the complete rows
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
            problem = None
        except StopIteration:
            break
        except csv.Error as error:
            fields, problem = [], f"unparsable ({error})"
        is_last = reader.line_num >= len(lines)
        if problem is None and not fields:
            complete_end = reader.line_num  # a blank line
            continue
        if is_last and not ends_complete:
            problem = problem or "no newline at its end"
        if header is None:
            missing = [c for c in EARLIER_COLUMNS if c not in fields]
            if problem is None and missing:
                if not is_last:
                    raise RunFolderError(f"{path}, line {start}: the header lacks the columns {', '.join(missing)}")
                problem = f"the header lacks the columns {', '.join(missing)}"
            if problem is None:
                header = tuple(fields)
                complete_end = reader.line_num
                continue
        elif problem is None:
            problem = _row_problem(fields, header)
            if problem is None:
                rows.append({**LATER_COLUMNS, **dict(zip(header, fields))})
                complete_end = reader.line_num
                continue
        if not is_last:
            raise RunFolderError(f"{path}, line {start}: {problem}; only the last row can be cut short by a crash, "
                                 "so fix or delete this line by hand")
        return ResultsFile(path, header or RESULT_COLUMNS, rows, "".join(lines[:complete_end]),
                           "".join(lines[complete_end:]), start)
    return ResultsFile(path, header or RESULT_COLUMNS, rows, "".join(lines[:complete_end]))


def read_json(path: Path, *, required: bool = True) -> Any:
    """A JSON file of a run folder ({} for an absent one that is not required)."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise RunFolderError(f"{path}: no {path.name} in this run folder")
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(f"{path}: not valid JSON ({error})") from None

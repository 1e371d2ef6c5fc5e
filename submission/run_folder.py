"""Reading and writing a run folder: results.csv (append-only, atomic rows), manifest, scores, maps."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

from runfolder.reading import RunFolderError, read_json, read_results_file
from runfolder.schema import (EARLIER_COLUMNS, LATER_COLUMNS, MANIFEST_JSON, RESULT_COLUMNS, SCORE_COLUMNS, RunPaths,
                              anomalies_key, manifest_key)
from submission.errors import HarnessError


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _write_synced(path: Path, text: str, mode: str) -> None:
    """Write text in one call, flushed and fsynced before returning."""
    with open(path, mode, newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


@dataclass(frozen=True)
class ScoreFrame:
    """The rows of one scores/<variant>/k<k>_s<seed>/<category>.csv."""

    variant_dir: str
    names: list[str]
    kinds: list[str]
    labels: list[int]
    scores: np.ndarray
    extras: dict[str, np.ndarray]
    paths: list[str]  # each image file relative to the dataset root


class RunFolder:
    """One run folder on disk (`--out DIR`)."""

    def __init__(self, root: Path, warn: Callable[[str], None] = _warn) -> None:
        self.root = Path(root)
        self.paths = RunPaths(self.root)
        self.warn = warn
        if self.root.exists() and not self.root.is_dir():
            raise HarnessError(f"--out {self.root}: exists and is not a folder (a run folder is a directory)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a parent is a file, no permission, ...
            raise HarnessError(f"--out {self.root}: cannot create the run folder ({error.strerror or error})") from None
        self.results = self.paths.results

    def finished_rows(self) -> list[dict[str, str]]:
        """The rows with status=ok, as text.

        Reading for a resume: a torn last row (a crash while it was written) is moved to
        results.csv.torn with a warning, so its cell runs again; a bad row elsewhere is a HarnessError."""
        if not self.results.is_file():
            return []
        try:
            table = read_results_file(self.results)
        except RunFolderError as error:
            raise HarnessError(str(error)) from None
        if table.header not in (RESULT_COLUMNS, EARLIER_COLUMNS):  # a folder from before `anomaly_shots` resumes
            raise HarnessError(f"{self.results}: its columns differ from this harness's results.csv columns "
                               "(written by another version?); resume into a new --out")
        if table.torn_text is not None:
            _write_synced(self.paths.results_torn, table.torn_text.rstrip("\r\n") + "\n", "a")
            temporary = self.results.with_name(self.results.name + ".tmp")
            _write_synced(temporary, table.complete_text, "w")
            temporary.replace(self.results)
            self.warn(f"{self.results}, line {table.torn_line}: the last row was cut short (a crash while it was "
                      f"written); moved to {self.paths.results_torn.name}, its cell runs again")
        return [row for row in table.rows if row["status"] == "ok"]

    def append_result(self, row: Mapping[str, Any]) -> None:
        """Append one results row in a single write, flushed to disk (header first on a new file)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        new = not self.results.is_file() or self.results.stat().st_size == 0
        columns = RESULT_COLUMNS if new else self._header()
        if new:
            writer.writerow(RESULT_COLUMNS)
        # a later column the file lacks reads as its default: only a row holding that default may leave it out
        lost = [c for c in RESULT_COLUMNS
                if c not in columns and _format(row.get(c, LATER_COLUMNS.get(c))) != LATER_COLUMNS.get(c)]
        if lost:
            raise HarnessError(f"{self.results}: written before the column(s) {', '.join(lost)}; a row with "
                               f"{', '.join(f'{c}={row[c]}' for c in lost)} needs a new --out")
        writer.writerow([_format(row.get(column, LATER_COLUMNS.get(column))) for column in columns])
        _write_synced(self.results, buffer.getvalue(), "a")

    def _header(self) -> tuple[str, ...]:
        """The columns of the existing results.csv's header (rows are appended in them)."""
        with open(self.results, newline="") as handle:
            return tuple(next(csv.reader([handle.readline()]), RESULT_COLUMNS))

    def write_json(self, name: str, payload: Any) -> None:
        """Write a JSON file atomically (temp file, then rename)."""
        target = self.root / name
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        temporary.replace(target)

    def read_json(self, name: str) -> dict:
        """A JSON file of the run folder, or {} when absent; a corrupt one is a HarnessError naming it."""
        try:
            return read_json(self.root / name, required=False)
        except RunFolderError as error:
            raise HarnessError(str(error)) from None

    def record_support(self, category: str, k: int, seed: int, names: list[str], anomalies: list[str] = ()) -> None:
        """manifest.json[category]["k<k>_s<seed>"]: the support images' file names of a cell; with `anomalies`
        (`--anomaly-shots`), ["k<k>_s<seed>_anomalies"]: the ids (`<defect>/<stem>`) of its labelled anomalies."""
        manifest = self.read_json(MANIFEST_JSON)
        manifest.setdefault(category, {})[manifest_key(k, seed)] = list(names)
        if anomalies:
            manifest[category][anomalies_key(k, seed)] = list(anomalies)
        self.write_json(MANIFEST_JSON, manifest)

    def write_scores(self, frame: ScoreFrame, k: int, seed: int, category: str) -> None:
        """scores/<variant>/k<k>_s<seed>/<category>.csv: image, kind, label, score, path (the image file
        relative to the dataset root), then the extras."""
        path = self.paths.scores(frame.variant_dir, k, seed, category)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*SCORE_COLUMNS, *frame.extras])
            for i, name in enumerate(frame.names):
                writer.writerow([name, frame.kinds[i], frame.labels[i], _format(float(frame.scores[i])), frame.paths[i],
                                 *(_format(float(values[i])) for values in frame.extras.values())])

    def write_map(self, variant_dir: str, k: int, seed: int, category: str, item_name: str, anomaly_map: np.ndarray) -> None:
        """maps/<variant>/k<k>_s<seed>/<category>/test/<defect>/<id>.tiff, float32 at the mask resolution."""
        path = self.paths.map(variant_dir, k, seed, category, item_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(anomaly_map.astype(np.float32), mode="F").save(path)

"""Reading and writing a run folder: results.csv (append-only, atomic rows), manifest, scores, maps."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from leaderboard.columns import CELL_KEY, RESULT_COLUMNS, SCORE_COLUMNS


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


class RunFolder:
    """One run folder on disk (`--out DIR`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.results = self.root / "results.csv"

    def finished_cells(self) -> set[tuple[str, ...]]:
        """Keys (method, preset, category, k, seed) of rows with status=ok."""
        if not self.results.is_file():
            return set()
        with open(self.results, newline="") as handle:
            return {tuple(row[c] for c in CELL_KEY) for row in csv.DictReader(handle) if row.get("status") == "ok"}

    def append_result(self, row: Mapping[str, Any]) -> None:
        """Append one results row in a single write, flushed to disk (header first on a new file)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        new = not self.results.is_file() or self.results.stat().st_size == 0
        if new:
            writer.writerow(RESULT_COLUMNS)
        writer.writerow([_format(row.get(column)) for column in RESULT_COLUMNS])
        with open(self.results, "a", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())

    def write_json(self, name: str, payload: Any) -> None:
        """Write a JSON file atomically (temp file, then rename)."""
        target = self.root / name
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        temporary.replace(target)

    def read_json(self, name: str) -> dict:
        """A JSON file of the run folder, or {} when absent."""
        path = self.root / name
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_scores(self, variant_dir: str, k: int, seed: int, category: str, names: list[str], kinds: list[str],
                     labels: list[int], scores: np.ndarray, extras: Mapping[str, np.ndarray]) -> None:
        """scores/<variant>/k<k>_s<seed>/<category>.csv: image, kind, label, score, then the extras."""
        path = self.root / "scores" / variant_dir / f"k{k}_s{seed}" / f"{category}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*SCORE_COLUMNS, *extras])
            for i, name in enumerate(names):
                writer.writerow([name, kinds[i], labels[i], _format(float(scores[i])),
                                 *(_format(float(values[i])) for values in extras.values())])

    def write_map(self, variant_dir: str, k: int, seed: int, category: str, item_name: str, anomaly_map: np.ndarray) -> None:
        """maps/<variant>/k<k>_s<seed>/<category>/test/<defect>/<id>.tiff, float32 at the mask resolution."""
        path = self.root / "maps" / variant_dir / f"k{k}_s{seed}" / category / "test" / f"{item_name}.tiff"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(anomaly_map.astype(np.float32), mode="F").save(path)

"""What a run folder holds and how each path of it is spelled: written by `submission`, read by
`leaderboard`, `bench/` and the tests. Nothing else builds or parses these names by hand.

```
<run>/config.json  manifest.json  results.csv  leaderboard.csv  score_parts.csv  report.md  plots/
<run>/scores/<variant>/k<k>_s<seed>/<category>.csv
<run>/maps/<variant>/k<k>_s<seed>/<category>/test/<defect>/<id>.tiff
<run>/artifacts/<variant>/
```
`<variant>` is a method variant's folder name (`variant_dirname`), `k<k>_s<seed>`
is also the cell's key in manifest.json (`manifest[category][cell_name(k, seed)]`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

def variant_dirname(spec: str) -> str:
    """A variant's folder name: its spec with characters outside [A-Za-z0-9._-] replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", spec)


# --- results.csv --------------------------------------------------------------------------------
RESULT_COLUMNS: tuple[str, ...] = (
    "method", "preset", "category", "k", "seed", "status", "n_good", "n_logical", "n_structural",
    "image_auroc", "image_auroc_logical", "image_auroc_structural", "image_auroc_mean", "f1_max",
    "pixel_auroc", "aupro_0.3", "auspro_0.05", "auspro_logical_0.05", "auspro_structural_0.05",
    "fit_s", "predict_s", "method_info", "anomaly_shots",
)
# Columns added after the first release, at the end, with the value a results.csv written before them means:
# a file whose header lacks them is read as if every row held that value (anomaly_shots: m labelled anomalies
# per cell, `--anomaly-shots`; 0 = the VAND protocol).
ANOMALY_SHOTS = "anomaly_shots"  # the track's m, one value per run folder
LATER_COLUMNS: dict[str, str] = {ANOMALY_SHOTS: "0"}
EARLIER_COLUMNS: tuple[str, ...] = tuple(c for c in RESULT_COLUMNS if c not in LATER_COLUMNS)  # a first-release header
METRIC_COLUMNS: tuple[str, ...] = RESULT_COLUMNS[RESULT_COLUMNS.index("image_auroc"):RESULT_COLUMNS.index("fit_s")]
TIMING_COLUMNS: tuple[str, ...] = ("fit_s", "predict_s")
COUNT_COLUMNS: tuple[str, ...] = ("n_good", "n_logical", "n_structural")
CELL_KEY: tuple[str, ...] = ("method", "preset", "category", "k", "seed")
STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")

# --- scores/<variant>/k<k>_s<seed>/<category>.csv --------------------------------------------------
# image: the test item's id (`<defect>/<stem>`), kind: its defect folder (`good`, `logical_anomalies`,
# `crack`, ...), label: 0/1, score: the image score, path: the image file relative to the dataset root
# (config.json's `data`); then one column per extra score part (`local`, `global`, `z_<member>`, ...).
SCORE_COLUMNS: tuple[str, ...] = ("image", "kind", "label", "score", "path")

# --- anomaly kinds --------------------------------------------------------------------------------
GOOD = "good"
LOGICAL = "logical"
STRUCTURAL = "structural"
LOCO_KINDS: dict[str, str] = {"logical_anomalies": LOGICAL, "structural_anomalies": STRUCTURAL}  # defect folder -> kind

# --- file and folder names ------------------------------------------------------------------------
CONFIG_JSON = "config.json"
MANIFEST_JSON = "manifest.json"
RESULTS_CSV = "results.csv"
RESULTS_TORN = "results.csv.torn"  # torn last rows set aside on resume
LEADERBOARD_CSV = "leaderboard.csv"
SCORE_PARTS_CSV = "score_parts.csv"
REPORT_MD = "report.md"
PLOTS_DIR = "plots"
SCORES_DIR = "scores"
MAPS_DIR = "maps"
ARTIFACTS_DIR = "artifacts"
MAP_SUFFIX = ".tiff"
RUN_FILES: tuple[str, ...] = (CONFIG_JSON, MANIFEST_JSON, RESULTS_CSV, LEADERBOARD_CSV)  # the top-level files a bundle keeps

_CELL = re.compile(r"k(\d+)_s(-?\d+)")


def cell_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """A row's (method, preset, category, k, seed), as the strings results.csv holds."""
    return tuple(str(row[column]) for column in CELL_KEY)


def cell_name(k: int, seed: int) -> str:
    """`k<k>_s<seed>`: a cell's folder under scores/ and maps/, and its key in manifest.json."""
    return f"k{int(k)}_s{int(seed)}"


manifest_key = cell_name


def anomalies_key(k: int, seed: int) -> str:
    """`k<k>_s<seed>_anomalies`: the key in manifest.json[category] of a cell's labelled anomalies (test item ids,
    `--anomaly-shots`), beside its support set's `k<k>_s<seed>`."""
    return f"{cell_name(k, seed)}_anomalies"


def parse_cell_name(name: str) -> tuple[int, int] | None:
    """(k, seed) of a `k<k>_s<seed>` name, None for any other name."""
    match = _CELL.fullmatch(name)
    return (int(match[1]), int(match[2])) if match else None


def relative_image_path(image: Path, dataset_root: Path) -> str:
    """A test image's path relative to the dataset root, with `/` separators (the score CSVs' `path`)."""
    return Path(image).relative_to(dataset_root).as_posix()


@dataclass(frozen=True)
class ScoresFile:
    """What the path of a score CSV says."""

    variant: str
    k: int
    seed: int
    category: str


@dataclass(frozen=True)
class MapFile:
    """What the path of a saved anomaly map says; `item` is the test item's id, `<defect>/<stem>`."""

    variant: str
    k: int
    seed: int
    category: str
    item: str


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run folder, built and parsed in one place."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_JSON

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_JSON

    @property
    def results(self) -> Path:
        return self.root / RESULTS_CSV

    @property
    def results_torn(self) -> Path:
        return self.root / RESULTS_TORN

    @property
    def leaderboard(self) -> Path:
        return self.root / LEADERBOARD_CSV

    @property
    def score_parts(self) -> Path:
        return self.root / SCORE_PARTS_CSV

    @property
    def report(self) -> Path:
        return self.root / REPORT_MD

    @property
    def plots(self) -> Path:
        return self.root / PLOTS_DIR

    def plot(self, name: str) -> Path:
        return self.plots / name

    # scores/<variant>/k<k>_s<seed>/<category>.csv
    def scores_variant(self, variant: str) -> Path:
        return self.root / SCORES_DIR / variant

    def scores(self, variant: str, k: int, seed: int, category: str) -> Path:
        return self.scores_variant(variant) / cell_name(k, seed) / f"{category}.csv"

    def parse_scores(self, path: Path) -> ScoresFile | None:
        """The parts of a score CSV's path, or None for a path that is not one."""
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return None
        if len(parts) != 4 or parts[0] != SCORES_DIR or not parts[3].endswith(".csv"):
            return None
        cell = parse_cell_name(parts[2])
        return None if cell is None else ScoresFile(parts[1], cell[0], cell[1], parts[3][:-len(".csv")])

    def score_files(self) -> list[tuple[ScoresFile, Path]]:
        """Every score CSV of the run, sorted by path."""
        found = ((self.parse_scores(p), p) for p in sorted(self.root.glob(f"{SCORES_DIR}/*/*/*.csv")))
        return [(parsed, path) for parsed, path in found if parsed is not None]

    # maps/<variant>/k<k>_s<seed>/<category>/test/<defect>/<id>.tiff
    def maps_root(self) -> Path:
        return self.root / MAPS_DIR

    def maps_cell(self, variant: str, k: int, seed: int) -> Path:
        return self.root / MAPS_DIR / variant / cell_name(k, seed)

    def map(self, variant: str, k: int, seed: int, category: str, item: str) -> Path:
        """`item` is the test item's id, `<defect>/<stem>`."""
        return self.maps_cell(variant, k, seed) / category / "test" / f"{PurePosixPath(item)}{MAP_SUFFIX}"

    def parse_map(self, path: Path) -> MapFile | None:
        """The parts of a saved map's path, or None for a path that is not one."""
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return None
        if len(parts) < 7 or parts[0] != MAPS_DIR or parts[4] != "test" or not parts[-1].endswith(MAP_SUFFIX):
            return None
        cell = parse_cell_name(parts[2])
        if cell is None:
            return None
        item = "/".join([*parts[5:-1], parts[-1][:-len(MAP_SUFFIX)]])
        return MapFile(parts[1], cell[0], cell[1], parts[3], item)

    def map_cells(self) -> list[tuple[str, int, int, list[str]]]:
        """(variant, k, seed, categories) of every cell with saved maps, sorted by variant, then k, seed."""
        cells = []
        for variant in sorted(p for p in (self.root / MAPS_DIR).glob("*") if p.is_dir()):
            for folder in variant.iterdir():
                cell = parse_cell_name(folder.name)
                if cell is not None and folder.is_dir():
                    categories = sorted(p.name for p in folder.iterdir() if p.is_dir())
                    cells.append((variant.name, cell[0], cell[1], categories))
        return sorted(cells, key=lambda c: (c[0], c[1], c[2]))

    # artifacts/<variant>/
    @property
    def artifacts_root(self) -> Path:
        return self.root / ARTIFACTS_DIR

    def artifacts(self, variant: str) -> Path:
        return self.artifacts_root / variant

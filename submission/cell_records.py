"""What one cell of the grid is and what it yields, as plain picklable records, and the one way a cell's result
is written into the run folder.

A `CellTask` is one (category, k, seed) with the variant specs still to score there (a fusion's members travel
with it). Whichever executor runs it — the local loop, a Ray actor, a Slurm array job — the work comes back as a
`CellResult` (rows, score frames, maps, the support names, messages) and only the driver writes it, through
`write_cell_result`, so a run folder reads the same whichever executor filled it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runfolder.schema import LOGICAL, STRUCTURAL
from submission.anomaly_shots import hold_out
from submission.config import RunConfig
from submission.datasets.records import Category
from submission.preflight import Variant
from submission.run_folder import RunFolder, ScoreFrame


@dataclass(frozen=True)
class CellTask:
    """One (category, k, seed) cell and the variant specs whose rows it must write (`pending`)."""

    category: str
    k: int
    seed: int
    pending: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.category} k={self.k} seed={self.seed}"


@dataclass(frozen=True)
class CellJob:
    """What every worker needs to run cells of one run: the config, the checked variants (pre-flight done on
    the driver), the categories read there, and the artifacts folder methods keep across cells."""

    config: RunConfig  # with `threads` resolved by the driver
    preset: str
    variants: tuple[Variant, ...]  # in run order
    categories: tuple[Category, ...]
    artifacts: Path

    def category(self, name: str) -> Category:
        """The category of the run named `name`."""
        return next(c for c in self.categories if c.name == name)


@dataclass(frozen=True)
class VariantOutcome:
    """One variant's results.csv row in a cell, with its scores and saved maps (item id -> map) when it ran."""

    row: dict[str, Any]
    scores: ScoreFrame | None = None
    maps: tuple[tuple[str, np.ndarray], ...] = ()


@dataclass(frozen=True)
class CellResult:
    """Everything one cell yields, in the order it is written: the support names, then each variant's outcome."""

    task: CellTask
    support: tuple[str, ...]  # support image names (manifest.json)
    outcomes: tuple[VariantOutcome, ...]
    messages: tuple[str, ...] = ()  # console lines (rich markup) for the driver to print
    worker: str = "local"  # which worker ran it
    features: dict[str, Any] = field(default_factory=dict)  # that worker's feature-cache counters after this cell
    anomalies: tuple[str, ...] = ()  # ids of the labelled anomalies drawn from its test set (--anomaly-shots)


def base_row(spec: str, preset: str, category: Category, k: int, seed: int, anomaly_shots: int = 0) -> dict[str, Any]:
    """The key and test-set counts of a variant's row in a cell (n_logical / n_structural empty without kinds);
    `category` is the cell's (with --anomaly-shots, its test set without the drawn anomalies)."""
    kinds = [item.kind for item in category.test]
    has_kinds = any(kind is not None for kind in kinds)
    return {
        "method": spec, "preset": preset, "category": category.name, "k": k, "seed": seed,
        "n_good": sum(item.label == 0 for item in category.test),
        "n_logical": sum(kind == LOGICAL for kind in kinds) if has_kinds else None,
        "n_structural": sum(kind == STRUCTURAL for kind in kinds) if has_kinds else None,
        "anomaly_shots": anomaly_shots,
    }


def failed_result(job: CellJob, task: CellTask, error: str, worker: str) -> CellResult:
    """A cell none of whose pending variants could run (its worker died every time it was tried): failed rows,
    so the run goes on and a rerun into the same folder tries the cell again."""
    m = job.config.anomaly_shots
    category = hold_out(job.category(task.category), m, task.seed).category
    info = json.dumps({"preset": job.preset, "error": error})
    outcomes = tuple(VariantOutcome({**base_row(v.spec, job.preset, category, task.k, task.seed, m), "status": "failed",
                                     "method_info": info}) for v in job.variants if v.spec in task.pending)
    return CellResult(task, (), outcomes, (f"[red]{task.label} failed:[/red] {error}",), worker)


def write_cell_result(folder: RunFolder, result: CellResult) -> None:
    """Write a cell's result: its support set into manifest.json, then per variant its scores, maps and row."""
    task = result.task
    if result.support:
        folder.record_support(task.category, task.k, task.seed, list(result.support), list(result.anomalies))
    for outcome in result.outcomes:
        frame = outcome.scores
        if frame is not None:
            folder.write_scores(frame, task.k, task.seed, task.category)
            for item_name, anomaly_map in outcome.maps:
                folder.write_map(frame.variant_dir, task.k, task.seed, task.category, item_name, anomaly_map)
        folder.append_result(outcome.row)


def cell_groups(tasks: Sequence[CellTask], count: int) -> list[list[CellTask]]:
    """`tasks` cut into at most `count` groups of near-equal size, in order, so a category's cells stay together
    where the sizes allow (each group computes its categories' features once)."""
    order = {name: i for i, name in enumerate(dict.fromkeys(t.category for t in tasks))}
    tasks = sorted(tasks, key=lambda t: order[t.category])  # stable: within a category, the grid's order
    count = max(1, min(count, len(tasks)))
    bounds = [round(i * len(tasks) / count) for i in range(count + 1)]
    return [list(tasks[bounds[i]:bounds[i + 1]]) for i in range(count) if bounds[i] < bounds[i + 1]]

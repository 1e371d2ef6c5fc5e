"""The driver of a run: pre-flight, the resume checks, config.json, the list of cells, progress, and the one
writer of the run folder. The cells themselves run on the configured executor through `CellWorker`
(`submission.cell_worker`); aggregation lives in `leaderboard/`.

Every finished cell is one atomic row of results.csv; rerunning into the same folder skips the cells whose row has
status=ok, once the folder's recorded settings match the run's.
"""
from __future__ import annotations

import platform
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import timm
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from methods.plugins import Plugin, load_plugins
from methods.registry import PluginError
from runfolder.schema import CONFIG_JSON, cell_key
from submission.anomaly_shots import check_anomaly_shots
from submission.cell_records import CellJob, CellResult, CellTask, write_cell_result
from submission.cell_worker import feature_cache, resolve_device
from submission.config import RunConfig
from submission.datasets.procedural import embedded_dataset
from submission.datasets.readers import content_digest, list_categories, other_categories, read_category
from submission.datasets.records import Category
from submission.errors import HarnessError
from submission.executors import make_executor
from submission.preflight import Variant, preflight
from submission.run_folder import RunFolder
from submission.settings_drift import (drift_line, recorded_run_settings, run_drift_line, run_settings_drift,
                                       settings_drift)


def default_run_dir() -> Path:
    """runs/<timestamp> under the working directory."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def load_categories(config: RunConfig, console: Console) -> list[Category]:
    """The categories of the run, read and checked before any cell starts."""
    data, fmt = config.data, config.format
    if data is None:
        console.print(f"[dim]no --data: using the embedded procedural dataset, {config.procedural_split} split[/dim]")
        data, fmt = embedded_dataset(config.procedural_split), "loco"
    names = list(config.categories) or list_categories(Path(data))
    return [read_category(Path(data), name, fmt) for name in names]


def check_categories(config: RunConfig, variants: list[Variant], categories: list[Category]) -> None:
    """Before any cell: every k fits every support pool, every category can give the labelled anomalies, and a
    method trained off the target (RegAD) with `source=dataset` or a folder finds another category there."""
    for category in categories:
        for k in config.shots:
            if k > len(category.train_good) or k < 1:
                raise HarnessError(f"{category.root}: --shots {k} is not within 1..{len(category.train_good)} "
                                   "(the size of its support pool)")
    check_anomaly_shots(categories, config.anomaly_shots)
    for variant in variants:
        source = variant.requirements.auxiliary_source
        if source is None or source == "procedural":
            continue
        for target in categories:
            root = target.root.parent if source == "dataset" else Path(source)
            if not other_categories(root, target):
                raise HarnessError(f"{variant.spec}: source={source!r} ({root}) has no category other than "
                                   f"{target.name!r} to train on")


class Runner:
    """Runs every cell of a `RunConfig` into a run folder: pre-flight and the list of cells here, the cells on
    the configured executor, every result written here (the run folder's only writer)."""

    def __init__(self, config: RunConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console()
        self.preset = config.resolved_preset
        self.device = resolve_device(config.device)
        self.run_dir = Path(config.out or default_run_dir())  # created once the pre-flight has passed
        self.folder: RunFolder | None = None
        self.features = feature_cache(config, self.device)  # the local executor's; other workers have their own
        self.workers: dict[str, dict[str, Any]] = {}  # worker -> its feature-cache counters, from its results
        self.plugins: tuple[Plugin, ...] = ()

    def run(self) -> Path:
        """Pre-flight, the resume checks, then every cell; returns the run folder."""
        try:
            self.plugins = load_plugins(self.config.plugins)  # before the registry is asked for their methods
        except PluginError as error:
            raise HarnessError(str(error)) from None
        variants = preflight(self.config.methods, self.preset, self.config.weights, self.config.pretrained)
        for variant in variants:
            for message in variant.missing:
                self.console.print(f"[yellow]skipped {variant.spec} ({self.preset}):[/yellow] {message}")
        if not any(v.runnable for v in variants):
            raise HarnessError("no requested method can run under preset "
                               f"{self.preset!r}; see the messages above (or use --preset offline)")
        categories = load_categories(self.config, self.console)
        check_categories(self.config, [v for v in variants if v.runnable], categories)
        self.folder = RunFolder(self.run_dir)
        recorded = recorded_run_settings(self.folder.read_json(CONFIG_JSON))  # {} for a new run folder
        self.config = replace(self.config, threads=self.config.threads or recorded.get("threads")
                              or self.config.executor.cpus_per_worker or torch.get_num_threads())
        settings = self._settings(categories)
        if drift := run_settings_drift(recorded, settings):
            raise HarnessError(run_drift_line(self.run_dir, drift))
        finished = self.folder.finished_rows()
        for variant in variants:  # a resume must not keep cells made with other method settings beside new ones
            if drift := settings_drift(finished, variant.spec, self.preset, variant.config):
                raise HarnessError(drift_line(self.run_dir, variant.spec, self.preset, drift))
        self._write_config(variants, categories, settings)
        done = {cell_key(row) for row in finished}
        cells = [(c, k, s) for c in categories for k in self.config.shots for s in self.config.seeds]
        if self.config.shard is not None:  # a job scheduler runs shards on many machines, then merges them
            index, count = self.config.shard
            cells = cells[index::count]
        tasks = [CellTask(category.name, k, seed, pending) for category, k, seed in cells
                 if (pending := tuple(v.spec for v in variants
                                      if cell_key({"method": v.spec, "preset": self.preset, "category": category.name,
                                                   "k": k, "seed": seed}) not in done))]
        job = CellJob(self.config, self.preset, tuple(variants), tuple(categories), self.folder.paths.artifacts_root)
        executor = make_executor(self.config.executor, self.features, self.run_dir,
                                 lambda line: self.console.print(line, highlight=False))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=False) as progress:
            bar = progress.add_task("cells", total=len(cells) * len(variants),
                                    completed=(len(cells) - len(tasks)) * len(variants))  # finished earlier

            def deliver(result: CellResult) -> None:
                for message in result.messages:
                    self.console.print(message, highlight=False)
                write_cell_result(self.folder, result)
                self.workers[result.worker] = result.features
                progress.advance(bar, len(variants))

            executor.run(job, tasks, deliver, lambda text: progress.update(bar, description=text))
        self._write_config(variants, categories, settings)  # again, with the final backbone pass counts
        return self.folder.root

    def _settings(self, categories: list[Category]) -> dict[str, Any]:
        """The run-level settings that change a cell's numbers (`settings_drift.RUN_SETTINGS`), as recorded."""
        config = self.config
        data = str(Path(config.data).resolve()) if config.data is not None else f"embedded:{config.procedural_split}"
        return {"data": data, "data_content": {c.name: content_digest(c) for c in categories},
                "format": categories[0].format, "preset": self.preset, "image_size": config.image_size,
                "metrics": config.metrics, "precision": config.precision, "procedural_split": config.procedural_split,
                "anomaly_shots": config.anomaly_shots, "threads": config.threads, "device": str(self.device),
                "batch_size": config.batch_size, "pretrained": config.pretrained,
                "plugins": {plugin.origin: plugin.digest for plugin in self.plugins}}

    def _feature_counts(self) -> tuple[dict[str, int], dict[str, Any]]:
        """Backbone passes and feature-cache counters of the run: the run's own cache when the cells ran here,
        else passes summed over the workers and each worker's counters."""
        remote = {name: counters for name, counters in self.workers.items() if name != "local"}
        if not remote:
            return dict(self.features.passes), self.features.pass_summary()
        passes: Counter[str] = Counter()
        for counters in remote.values():
            passes.update(counters.get("backbone_passes", {}))
        return dict(passes), {"workers": remote}

    def _write_config(self, variants: list[Variant], categories: list[Category], settings: dict[str, Any]) -> None:
        passes, summary = self._feature_counts()
        self.folder.write_json(CONFIG_JSON, {
            "arguments": asdict(self.config),
            "settings": settings,  # compared by a resume before any cell
            "plugins": [asdict(plugin) for plugin in self.plugins],
            "preset": self.preset,
            "data": str(categories[0].root.parent),
            # the embedded dataset's realisation read (the data without --data; RegAD source=procedural)
            "procedural_split": self.config.procedural_split,
            "categories": [c.name for c in categories],
            "methods": {v.spec: {"config": asdict(v.config), "weights": v.weights, "missing": v.missing} for v in variants},
            "device": str(self.device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
            "backbone_passes": passes,
            "feature_passes": summary,  # dataset-image vs view passes, cache evictions
        })


def run(config: RunConfig, console: Console | None = None) -> Path:
    """Run the whole grid of a config; returns the run folder."""
    return Runner(config, console).run()

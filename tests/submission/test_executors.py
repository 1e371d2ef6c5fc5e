"""The executors decide only where cells run: a tiny grid gives the same results.csv and score files locally, on
a local Ray with 2 CPUs, in 2 merged shards and as a submitit job array (its LocalExecutor: real child processes);
a rerun into the folder runs nothing; a cell whose Ray worker dies is tried again on a fresh one, with the same
results."""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from leaderboard.merge import merge
from methods import registry
from methods.base import Prediction
from runfolder.schema import TIMING_COLUMNS, RunPaths
from submission.cell_records import CellTask, cell_groups
from submission.cli import main
from submission.config import ExecutorConfig, RunConfig
from submission.executors.affinity import AffinityQueue
from submission.runner import run

GRID = dict(categories=("pill_tray",), shots=(1,), seeds=(42, 0), methods=("patchcore", "clip_logic"),
            preset="offline", image_size=64)


def _results(run_dir: Path) -> pd.DataFrame:
    """results.csv without timings, one row per cell in a fixed order."""
    table = pd.read_csv(RunPaths(run_dir).results, dtype=str, keep_default_na=False).drop(columns=list(TIMING_COLUMNS))
    return table.sort_values(["method", "category", "k", "seed"]).reset_index(drop=True)


def _scores(run_dir: Path) -> dict[str, str]:
    paths = RunPaths(run_dir)
    return {str(path.relative_to(paths.root)): path.read_text() for _, path in paths.score_files()}


@pytest.fixture(scope="module")
def local_run(tiny_loco, tmp_path_factory):
    """The default local run, as a user runs it: torch's default thread count, recorded in config.json and set
    by every executor's workers before each cell."""
    return run(RunConfig(data=tiny_loco, out=tmp_path_factory.mktemp("local"), **GRID))


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=max(2, torch.get_num_threads()), include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _assert_same(run_dir: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(_results(run_dir), _results(reference))
    assert _scores(run_dir) == _scores(reference)


def test_the_local_run_is_the_reference(local_run):
    table = _results(local_run)
    assert len(table) == 4 and set(table["status"]) == {"ok"} and len(_scores(local_run)) == 4


@dataclass(frozen=True)
class DyingConfig:
    marker: str = ""  # the first fit that finds no file here creates it and kills its process


class Dying:
    """A training-free dummy whose first fit (over all processes) ends its process, as a crash or the OOM killer."""

    name = "dying"

    def __init__(self, config: DyingConfig) -> None:
        self.config = config

    def fit(self, support, *, category, context):
        marker = Path(self.config.marker)
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)

    def predict(self, images):
        return Prediction(scores=images.mean(dim=(1, 2, 3)), maps=images.mean(dim=1))

    def info(self):
        return {}


@pytest.fixture
def dying(tmp_path):
    config = DyingConfig(str(tmp_path / "died"))
    registry.register("dying", config=DyingConfig, presets={"paper": config, "offline": config},
                      summary="a test dummy that kills its process once")(Dying)
    yield tmp_path / "died"
    registry._REGISTRY.pop("dying")


def test_ray_gives_the_local_results_retries_a_dead_worker_and_a_rerun_runs_nothing(local_run, local_ray, dying,
                                                                                      tiny_loco, tmp_path):
    grid = {**GRID, "methods": (*GRID["methods"], "dying")}  # one worker dies once, in the middle of a cell
    config = RunConfig(data=tiny_loco, out=tmp_path / "ray", executor=ExecutorConfig("ray", retries=1),
                       **grid)  # the default Ray run: a worker per --threads cores of the cluster
    run_dir = run(config)
    table = _results(run_dir)
    assert dying.read_text() != str(os.getpid())  # a worker died, not this process
    assert list(table.loc[table["method"] == "dying", "status"]) == ["ok", "ok"]  # its cell ran again
    pd.testing.assert_frame_equal(table[table["method"] != "dying"].reset_index(drop=True), _results(local_run))
    assert {name: text for name, text in _scores(run_dir).items() if "dying" not in name} == _scores(local_run)
    paths = RunPaths(run_dir)
    recorded = json.loads(paths.config.read_text())
    assert set(recorded["feature_passes"]) == {"workers"}  # each actor's own feature cache
    assert all(name.startswith("ray-") for name in recorded["feature_passes"]["workers"])
    assert recorded["backbone_passes"]["lite0"] > 0
    written = {path: path.stat().st_mtime_ns for path in [paths.results, *(p for _, p in paths.score_files())]}
    run(config)  # resume: every cell is finished
    assert {path: path.stat().st_mtime_ns for path in written} == written


def test_two_shards_merged_give_the_local_results(local_run, tiny_loco, tmp_path):
    shards = [run(RunConfig(data=tiny_loco, out=tmp_path / f"shard{i}", shard=(i, 2), **GRID)) for i in range(2)]
    _assert_same(merge(tmp_path / "merged", shards), local_run)


def test_a_submitit_job_array_gives_the_local_results(local_run, tiny_loco, tmp_path):
    executor = ExecutorConfig("slurm", workers=2, slurm_cluster="local")  # two array jobs, child processes
    run_dir = run(RunConfig(data=tiny_loco, out=tmp_path / "slurm", executor=executor, **GRID))
    _assert_same(run_dir, local_run)
    assert len(list((run_dir / "slurm").glob("*/*_result.pkl"))) == 2


def test_free_workers_keep_to_their_category():
    tasks = [CellTask(category, 1, seed, ("patchcore",)) for category in ("a", "b") for seed in range(3)]
    queue = AffinityQueue(tasks)
    first, second = queue.take(0)[0], queue.take(1)[0]
    assert (first.category, second.category) == ("a", "b")  # each worker on a category of its own
    assert [queue.take(0)[0].category for _ in range(2)] == ["a", "a"]
    assert queue.take(0)[0].category == "b" and len(queue) == 1  # "a" is done: helps with "b"
    queue.put_back(first, 1)
    assert queue.take(2) == (first, 1)  # a new worker takes the category no one is on; a retried cell first


def test_cell_groups_keep_categories_together():
    tasks = [CellTask(category, k, 0, ("patchcore",)) for category in ("b", "a") for k in (1, 2)]
    assert [[t.category for t in group] for group in cell_groups(tasks, 2)] == [["b", "b"], ["a", "a"]]
    assert len(cell_groups(tasks, 9)) == 4 and sum(map(len, cell_groups(tasks, 3))) == 4


@pytest.mark.parametrize("arguments, message", [
    (["--executor", "ray", "--workers", "0"], "--workers 0: must be an integer >= 1"),
    (["--ray-address", "auto"], "--ray-address auto: only with --executor ray"),
    (["--workers", "2"], "--workers 2: only with --executor ray or slurm"),
    (["--executor", "slurm"], "--executor slurm: no Slurm here (sbatch not found)"),
    (["--executor", "ray", "--retries", "-1"], "--retries -1: must be an integer >= 0"),
])
def test_bad_executor_options_exit_2(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    code = main(["run", "--out", str(tmp_path / "run"), *arguments])
    out = capsys.readouterr().out
    assert code == 2 and message in " ".join(out.split()) and not (tmp_path / "run").exists()


def test_a_missing_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    assert main(["run", "--executor", "ray", "--out", str(tmp_path / "run")]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "--executor ray: the ray package is not installed (pip install 'fewshot-ad-harness[ray]'" in out


def test_a_cell_out_of_retries_gets_failed_rows(tiny_loco):
    from submission.cell_records import CellJob, failed_result
    from submission.datasets.readers import read_category
    from submission.preflight import preflight

    variants = tuple(preflight(("patchcore", "clip_logic"), "offline", {}))
    job = CellJob(RunConfig(data=tiny_loco, **GRID), "offline", variants, (read_category(tiny_loco, "pill_tray", "loco"),),
                  tiny_loco / "artifacts")
    result = failed_result(job, CellTask("pill_tray", 1, 42, ("clip_logic",)), "worker died", "ray-0")
    assert [(o.row["method"], o.row["status"], o.row["n_good"]) for o in result.outcomes] == [("clip_logic", "failed", 4)]
    assert json.loads(result.outcomes[0].row["method_info"])["error"] == "worker died" and not result.support


def test_a_ray_address_where_nothing_listens_is_one_line_not_a_hang(tiny_loco, tmp_path, capsys):
    import socket
    import time

    with socket.socket() as probe:  # a free port: nothing listens there once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    code = main(["run", "--data", str(tiny_loco), "--categories", "pill_tray", "--shots", "1", "--seeds", "1",
                 "--methods", "patchcore", "--preset", "offline", "--image-size", "64", "--executor", "ray",
                 "--ray-address", f"127.0.0.1:{port}", "--out", str(tmp_path / "run")])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2 and f"--ray-address 127.0.0.1:{port}: no Ray head answers there" in out
    assert time.monotonic() - start < 60


def test_a_plugin_file_runs_on_ray_workers_as_locally(local_ray, tiny_loco, tmp_path):
    """A --plugin file's classes travel to the Ray actors by value: same results as the local run."""
    from tests.submission.test_plugins import PLUGIN, forget_plugins

    plugin = tmp_path / "colour_plugin.py"
    plugin.write_text(PLUGIN)
    grid = {**GRID, "methods": ("colour_nn", "patchcore", "fusion:members=colour_nn+patchcore"),
            "plugins": (str(plugin),)}
    try:
        local = run(RunConfig(data=tiny_loco, out=tmp_path / "local", **grid))
        on_ray = run(RunConfig(data=tiny_loco, out=tmp_path / "ray", executor=ExecutorConfig("ray"), **grid))
    finally:
        forget_plugins()
    _assert_same(on_ray, local)
    assert set(_results(on_ray)["status"]) == {"ok"}

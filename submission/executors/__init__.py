"""Where the cells of a run execute: `local` (this process, the grid's order), `ray` (actors on a Ray cluster,
one per GPU or per N CPU cores) or `slurm` (a submitit job array). Each runs the same `CellWorker.run_cell`
on `CellTask`s and hands every `CellResult` back to the driver, the only writer of the run folder.

Ray and submitit are optional extras: their executors are imported only when asked for, and asking for one that
is not installed is a one-line `HarnessError` when the config is checked (`ExecutorConfig.validate`), before any
work.
"""
from __future__ import annotations

from pathlib import Path

from methods.features import FeatureCache
from submission.config import ExecutorConfig
from submission.executors.base import Executor, Status
from submission.executors.local import LocalExecutor


def make_executor(config: ExecutorConfig, features: FeatureCache, run_dir: Path, say: Status) -> Executor:
    """The executor `config` names. `features` is the run's own cache (the local executor's worker uses it),
    `run_dir` the run folder (Slurm keeps its logs under it), `say` prints a line for the user."""
    if config.name == "ray":
        from submission.executors.ray_executor import RayExecutor  # the optional `ray` extra

        return RayExecutor(config, say)
    if config.name == "slurm":
        from submission.executors.slurm import SlurmExecutor  # the optional `slurm` extra

        return SlurmExecutor(config, Path(run_dir) / "slurm", say)
    return LocalExecutor(features)

"""Where the cells of a run execute: `local` (this process, the grid's order), `ray` (actors on a Ray cluster,
one per GPU or per N CPU cores) or `slurm` (a submitit job array). Each runs the same `CellWorker.run_cell`
on `CellTask`s and hands every `CellResult` back to the driver, the only writer of the run folder.

Ray and submitit are optional extras: their modules are imported only when asked for, and asking for one that
is not installed is a one-line `HarnessError` when the config is checked, before any work.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from submission.errors import HarnessError
from submission.option_checks import choice, numbers

if TYPE_CHECKING:
    from methods.backbones import FeatureCache
    from submission.cell_records import CellJob, CellResult, CellTask

EXECUTORS = ("local", "ray", "slurm")
SLURM_CLUSTERS = ("slurm", "local", "debug")  # submitit's: a Slurm cluster, or its stand-ins on this machine
EXTRA = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}  # executor -> (module, pip extra)


@dataclass(frozen=True)
class ExecutorConfig:
    """Which executor runs the cells and how many workers it uses; never changes what a cell computes."""

    name: str = "local"  # see EXECUTORS
    workers: int | None = None  # ray: actors (default: one per GPU of the cluster, else one per
    # `cpus_per_worker` cores); slurm: array jobs (default: one per category). Not used by local
    cpus_per_worker: int = 1  # CPU cores (torch threads) of a worker on the CPU
    retries: int = 2  # a cell whose worker dies (or array job fails) is tried again up to this many times
    ray_address: str | None = None  # join this Ray cluster (`auto`, `ray://head:10001`); None: start a local one
    slurm_partition: str | None = None
    slurm_time_min: int = 240  # wall-clock limit of each array job
    slurm_cluster: str = "slurm"  # see SLURM_CLUSTERS: `local` runs the array as processes here (trying it out)

    def validate(self) -> None:
        """Raise a one-line `HarnessError` naming the first option that cannot be used (a missing extra too)."""
        choice("--executor", self.name, EXECUTORS)
        for option, value in (("--cpus-per-worker", self.cpus_per_worker), ("--slurm-time", self.slurm_time_min),
                              *((("--workers", self.workers),) if self.workers is not None else ())):
            numbers(option, (value,), low=1)
        numbers("--retries", (self.retries,), low=0)
        if self.workers is not None and self.name == "local":
            raise HarnessError(f"--workers {self.workers}: only with --executor ray or slurm")
        if self.ray_address is not None and self.name != "ray":
            raise HarnessError(f"--ray-address {self.ray_address}: only with --executor ray")
        if self.slurm_partition is not None and self.name != "slurm":
            raise HarnessError(f"--slurm-partition {self.slurm_partition}: only with --executor slurm")
        choice("--slurm-cluster", self.slurm_cluster, SLURM_CLUSTERS)
        if self.name in EXTRA:
            module, extra = EXTRA[self.name]
            if importlib.util.find_spec(module) is None:
                raise HarnessError(f"--executor {self.name}: the {module} package is not installed "
                                   f"(pip install 'fewshot-ad-harness[{extra}]', or pip install -e '.[{extra}]')")
        if self.name == "slurm" and self.slurm_cluster == "slurm" and shutil.which("sbatch") is None:
            raise HarnessError("--executor slurm: no Slurm here (sbatch not found); --slurm-cluster local runs the "
                               "job array as processes on this machine")


Deliver = Callable[["CellResult"], None]
Status = Callable[[str], None]


class Executor(Protocol):
    """Runs `tasks` of `job` somewhere and calls `deliver` with each result, in this process, as it arrives."""

    def run(self, job: "CellJob", tasks: Sequence["CellTask"], deliver: Deliver, status: Status) -> None: ...


def make_executor(config: ExecutorConfig, features: "FeatureCache", run_dir: Path, say: Status) -> Executor:
    """The executor `config` names. `features` is the run's own cache (the local executor's worker uses it),
    `run_dir` the run folder (Slurm keeps its logs under it), `say` prints a line for the user."""
    if config.name == "ray":
        from submission.executors.ray_executor import RayExecutor

        return RayExecutor(config, say)
    if config.name == "slurm":
        from submission.executors.slurm import SlurmExecutor

        return SlurmExecutor(config, Path(run_dir) / "slurm", say)
    from submission.executors.local import LocalExecutor

    return LocalExecutor(features)

"""`--executor slurm`: the cells cut into groups (`cell_groups`: a category's cells together), one submitit
array job per group on a Slurm cluster with a shared filesystem; each job runs its group through a `CellWorker`
and returns the results, which the driver writes as they come (the driver waits: run it in tmux, screen or a
small job of its own). A job that fails (node lost, timeout) is submitted again, up to `retries` times; then its
cells' rows are written as failed, and a rerun into the same folder runs them again.

submitit's logs and pickles are under <run>/slurm/. `slurm_cluster=local` runs the array as processes on this
machine (submitit's LocalExecutor), `debug` in this process: both for trying it without a cluster.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import submitit

from submission.cell_records import CellJob, CellResult, CellTask, cell_groups, failed_result
from submission.cell_worker import CellWorker
from submission.config import ExecutorConfig
from submission.errors import HarnessError
from submission.executors.base import Deliver, Status

POLL_S = {"slurm": 15.0, "local": 0.5, "debug": 0.0}  # how often the driver looks at its jobs


@dataclass(frozen=True)
class GroupOutcome:
    """What one array job returns: the results of its cells, in order, and the harness error that stopped it."""

    results: tuple[CellResult, ...]
    error: str | None = None


def run_cell_group(job: CellJob, tasks: list[CellTask], name: str) -> GroupOutcome:
    """The body of one array job: a `CellWorker` over `tasks` (it sets the run's thread count per cell)."""
    worker = CellWorker(job, name=name)
    results: list[CellResult] = []
    try:
        for task in tasks:
            results.append(worker.run_cell(task))
    except HarnessError as error:
        return GroupOutcome(tuple(results), str(error))
    finally:
        worker.close()
    return GroupOutcome(tuple(results))


class SlurmExecutor:
    """Submits one array job per cell group and delivers the results of each job when it ends."""

    def __init__(self, config: ExecutorConfig, folder: Path, say: Status) -> None:
        self.config = config
        self.folder = Path(folder)
        self.say = say

    def _executor(self, job: CellJob, jobs: int) -> Any:
        try:
            executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.config.slurm_cluster)
        except RuntimeError as error:  # e.g. no srun on this machine
            raise HarnessError(f"--executor slurm: {error}") from None
        parameters: dict[str, Any] = {"timeout_min": self.config.slurm_time_min, "nodes": 1, "tasks_per_node": 1,
                                      "cpus_per_task": self.config.cpus_per_worker or job.config.threads, "name": "fewshot-ad",
                                      "slurm_array_parallelism": jobs}
        if job.config.device == "cuda":  # --device cuda: one GPU per array job
            parameters["gpus_per_node"] = 1
        if self.config.slurm_partition is not None:
            parameters["slurm_partition"] = self.config.slurm_partition
        executor.update_parameters(**parameters)
        return executor

    def run(self, job: CellJob, tasks: Sequence[CellTask], deliver: Deliver, status: Status) -> None:
        """Every group as an array job (failed jobs resubmitted, bounded); returns when all are delivered."""
        if not tasks:
            return
        groups = cell_groups(tasks, self.config.workers or len({t.category for t in tasks}))
        executor = self._executor(job, len(groups))
        names = [f"slurm-{i}.0" for i in range(len(groups))]
        submitted = executor.map_array(run_cell_group, [job] * len(groups), groups, names)
        running = {index: (array_job, 0) for index, array_job in enumerate(submitted)}
        self.say(f"slurm: {len(groups)} array jobs ({', '.join(j.job_id for j in submitted[:3])}"
                 f"{', ...' if len(groups) > 3 else ''}), logs in {self.folder}")
        poll = POLL_S[self.config.slurm_cluster]
        while running:
            status(f"slurm: {len(running)} of {len(groups)} array jobs running")
            finished = [index for index, (array_job, _) in running.items() if array_job.done()]
            if not finished:
                time.sleep(poll)
                continue
            for index in finished:
                array_job, attempt = running.pop(index)
                try:
                    outcome: GroupOutcome = array_job.result()
                except Exception as error:  # the job failed or was lost: submitted again, or its cells fail
                    reason = f"array job {array_job.job_id} failed on try {attempt + 1} of {self.config.retries + 1}"
                    self.say(f"[yellow]{reason}: {' '.join(str(error).split())[-300:]}[/yellow]")
                    if attempt < self.config.retries:
                        retry = executor.submit(run_cell_group, job, groups[index], f"slurm-{index}.{attempt + 1}")
                        running[index] = (retry, attempt + 1)
                    else:
                        for task in groups[index]:
                            deliver(failed_result(job, task, reason, f"slurm-{index}"))
                    continue
                for result in outcome.results:
                    deliver(result)
                if outcome.error is not None:
                    for other, _ in running.values():
                        other.cancel(check=False)
                    raise HarnessError(outcome.error)

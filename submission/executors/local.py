"""`--executor local`: every cell in this process, in the grid's order, sharing the run's feature cache."""
from __future__ import annotations

from typing import Sequence

from methods.features import FeatureCache
from submission.cell_records import CellJob, CellTask
from submission.executors.base import Deliver, Status
from submission.cell_worker import CellWorker


class LocalExecutor:
    """One `CellWorker` here, over the tasks in order; on CUDA the next category's images load while the current
    one computes."""

    def __init__(self, features: FeatureCache) -> None:
        self.features = features

    def run(self, job: CellJob, tasks: Sequence[CellTask], deliver: Deliver, status: Status) -> None:
        """Run each task and deliver its result before the next starts."""
        order = list(dict.fromkeys(task.category for task in tasks))
        worker = CellWorker(job, self.features, order=order, prefetch=self.features.device.type == "cuda",
                            on_step=status)
        try:
            for task in tasks:
                deliver(worker.run_cell(task))
        finally:
            worker.close()

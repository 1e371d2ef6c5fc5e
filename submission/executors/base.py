"""What every executor is: a way to run `CellTask`s of a `CellJob` and hand each `CellResult` to the driver."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

from submission.cell_records import CellJob, CellResult, CellTask

Deliver = Callable[[CellResult], None]
Status = Callable[[str], None]


class Executor(Protocol):
    """Runs `tasks` of `job` somewhere and calls `deliver` with each result, in this process, as it arrives."""

    def run(self, job: CellJob, tasks: Sequence[CellTask], deliver: Deliver, status: Status) -> None: ...

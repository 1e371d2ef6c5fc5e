"""Which cell a free worker takes next: one of the category it already holds features of, else one of a
category no other worker is on (the one with the most cells left), else any, so features are computed once per
worker and category where the grid allows."""
from __future__ import annotations

from collections import deque
from typing import Sequence

from submission.cell_records import CellTask


class AffinityQueue:
    """The cells not yet handed out, by category, and each worker's current category."""

    def __init__(self, tasks: Sequence[CellTask]) -> None:
        self._queues: dict[str, deque[tuple[CellTask, int]]] = {}
        for task in tasks:
            self._queues.setdefault(task.category, deque()).append((task, 0))
        self._home: dict[int, str] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def take(self, worker: int) -> tuple[CellTask, int] | None:
        """The next (task, attempt) for `worker`, or None when nothing is left."""
        home = self._home.get(worker)
        if home is not None and self._queues.get(home):
            return self._queues[home].popleft()
        left = [name for name, queue in self._queues.items() if queue]
        if not left:
            return None
        elsewhere = {name for other, name in self._home.items() if other != worker}
        choice = max([name for name in left if name not in elsewhere] or left, key=lambda n: len(self._queues[n]))
        self._home[worker] = choice
        return self._queues[choice].popleft()

    def put_back(self, task: CellTask, attempt: int) -> None:
        """A task to try again (its worker died), ahead of the others of its category."""
        self._queues.setdefault(task.category, deque()).appendleft((task, attempt))

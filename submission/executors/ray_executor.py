"""`--executor ray`: cells on Ray actors, one per GPU of the cluster (or per `cpus_per_worker` cores on the CPU),
each with its own feature cache; a free actor takes a cell of the category it already holds (`AffinityQueue`).
Results come back to the driver, which writes them. An actor that dies (a crash, the OOM killer, a lost node) is
replaced and its cell tried again, up to `retries` times; then the cell's rows are written as failed.

`ray.init(address=...)` joins an existing cluster (`--ray-address`); without one a local Ray is started here and
stopped at the end. A Ray already initialised in this process (a test's `ray.init(num_cpus=2)`) is used as is.
Every node needs this package installed in the same environment, and the data (and the run folder's artifacts/,
which methods such as RegAD write from the worker) at the same paths: a shared filesystem.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, Sequence

import ray
from ray.exceptions import RayError, RayTaskError

from submission.cell_records import CellJob, CellResult, CellTask, failed_result
from submission.cell_worker import CellWorker
from submission.config import ExecutorConfig
from submission.errors import HarnessError
from submission.executors.affinity import AffinityQueue
from submission.executors.base import Deliver, Status


CONNECT_TIMEOUT_S = 20.0  # our bound: reaching the head node named by --ray-address
WORKER_START_TIMEOUT_S = 300.0  # our bound: the first actor up (a cluster without room for one never starts it)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A `host:port` or `ray://host:port` address must accept a TCP connection within `timeout`, else one
    `HarnessError` line (Ray itself would retry for minutes without a word). `auto` is Ray's own lookup."""
    if address == "auto" or address.startswith("local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise HarnessError(f"--ray-address {address}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise HarnessError(f"--ray-address {address}: no Ray head answers there within {timeout:.0f} s "
                           f"({error.strerror or error})") from None


class CellActor:
    """A Ray actor around one `CellWorker` (its own device, feature cache and image store)."""

    def __init__(self, job: CellJob, name: str) -> None:
        self.worker = CellWorker(job, name=f"{name}@{socket.gethostname()}:{os.getpid()}")

    def ready(self) -> str:
        """The worker's name, once the actor is up."""
        return self.worker.name

    def run_cell(self, task: CellTask) -> CellResult:
        return self.worker.run_cell(task)


class RayExecutor:
    """Runs the tasks on Ray actors and delivers each result as it arrives."""

    def __init__(self, config: ExecutorConfig, say: Status) -> None:
        self.config = config
        self.say = say

    def run(self, job: CellJob, tasks: Sequence[CellTask], deliver: Deliver, status: Status) -> None:
        """Every task on an actor (retried on a fresh actor if its actor dies); returns when all are delivered."""
        if not tasks:
            return
        if self.config.ray_address is not None:
            check_reachable(self.config.ray_address)
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.config.ray_address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = self.config.ray_address or "a local cluster"
                raise HarnessError(f"--executor ray: cannot start or join {where} ({error})") from None
        try:
            self._run(job, tasks, deliver, status)
        finally:
            if started:
                ray.shutdown()

    def _actor_options(self, job: CellJob) -> tuple[dict[str, Any], int]:
        """Resources of one actor, and how many actors the cluster holds now."""
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        device = job.config.device
        if device == "cuda" and gpus == 0:
            raise HarnessError("--device cuda: the Ray cluster has no GPU")
        per = self.config.cpus_per_worker or job.config.threads
        if device == "cuda" or (device == "auto" and gpus > 0):  # one actor per GPU, whatever the driver's cores
            return {"num_gpus": 1, "num_cpus": self.config.cpus_per_worker or 1}, gpus
        if cpus < per:
            raise HarnessError(f"--cpus-per-worker {per}: the Ray cluster has {cpus} CPU cores")
        return {"num_cpus": per}, cpus // per

    def _run(self, job: CellJob, tasks: Sequence[CellTask], deliver: Deliver, status: Status) -> None:
        options, room = self._actor_options(job)
        count = self.config.workers or room
        if count > room and self.config.ray_address is None:  # a local cluster does not grow: the rest would wait
            self.say(f"[yellow]--workers {count}: this Ray cluster holds {room}; using {room}[/yellow]")
            count = room
        count = max(1, min(count, len(tasks)))
        actor_class = ray.remote(max_restarts=0, max_task_retries=0, **options)(CellActor)
        generation = [0] * count

        def new_actor(slot: int) -> Any:
            generation[slot] += 1
            return actor_class.remote(job, f"ray-{slot}.{generation[slot]}")

        actors = [new_actor(slot) for slot in range(count)]
        status(f"ray: waiting for the first of {count} workers")
        ready, _ = ray.wait([actor.ready.remote() for actor in actors], num_returns=1, timeout=WORKER_START_TIMEOUT_S)
        if not ready:
            raise HarnessError(f"--executor ray: no worker started within {WORKER_START_TIMEOUT_S:.0f} s (each needs "
                               f"{options}; the cluster has {ray.cluster_resources()})")
        queue = AffinityQueue(tasks)
        running: dict[Any, tuple[int, CellTask, int]] = {}

        def hand_out(slot: int) -> None:
            taken = queue.take(slot)
            if taken is not None:
                task, attempt = taken
                running[actors[slot].run_cell.remote(task)] = (slot, task, attempt)

        for slot in range(count):
            hand_out(slot)
        done = 0
        while running:
            status(f"ray: {count} workers, {done}/{len(tasks)} cells")
            (ref,), _ = ray.wait(list(running), num_returns=1)
            slot, task, attempt = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayTaskError as error:  # raised by the harness inside the worker: the run stops, as locally
                cause = getattr(error, "cause", None)
                if isinstance(cause, HarnessError):
                    raise HarnessError(str(cause)) from None
                raise
            except RayError as error:  # the worker is gone: a fresh actor, the cell again (bounded)
                try:
                    ray.kill(actors[slot], no_restart=True)
                except (RayError, ValueError):  # already gone
                    pass
                actors[slot] = new_actor(slot)
                reason = f"worker died ({type(error).__name__}) on try {attempt + 1} of {self.config.retries + 1}"
                self.say(f"[yellow]{task.label}: {reason}[/yellow]")
                if attempt < self.config.retries:
                    queue.put_back(task, attempt + 1)
                else:
                    deliver(failed_result(job, task, reason, f"ray-{slot}"))
                    done += 1
            else:
                deliver(result)
                done += 1
            hand_out(slot)

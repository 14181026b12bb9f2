"""``RayEngine``: one Ray task per job, on a local cluster started here or on an existing one (``address``).

Imported only through ``make_engine("ray")``. Jobs and their items must be picklable and must name files by
absolute paths that every node sees (shared storage): a task may run on another machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ray

from .outcome import TaskOutcome, describe_error

__all__ = ["RayEngine", "connect", "task_resources"]

R = TypeVar("R")
logger = logging.getLogger(__name__)


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` or start a local one (``num_cpus`` CPUs, default all); reuse the
    connection when this process already has one. Returns True when this call made the connection (so the
    caller should shut it down)."""
    if address is not None and num_cpus is not None:
        raise ValueError("num_cpus sizes a local cluster started here; a cluster at --address has its own")
    if ray.is_initialized():
        return False
    # No dashboard: it costs seconds at start-up and a web server nobody asked for (FACTS.md: ~7 s start).
    ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=True)
    return True


def task_resources(cpus: float = 1.0) -> dict[str, float]:
    """Ray resources of one job: a whole GPU where the cluster has GPUs (so jobs never share one), and
    ``cpus`` CPUs in every case."""
    resources: dict[str, float] = {"num_cpus": cpus}
    if ray.cluster_resources().get("GPU", 0) > 0:
        resources["num_gpus"] = 1
    return resources


def _run_job(fn: Callable[[Any], R], item: Any, threads: int) -> R:
    import torch

    # Ray sets OMP_NUM_THREADS from num_cpus, but torch may already run in this reused worker: be explicit.
    torch.set_num_threads(threads)
    return fn(item)


_remote_job = ray.remote(_run_job)


def _error_text(error: BaseException) -> str:
    """The job's own exception for a failed task (Ray wraps it with a remote traceback), else Ray's."""
    cause = getattr(error, "cause", None)
    return describe_error(cause if isinstance(cause, BaseException) else error)


class RayEngine:
    """Runs every job as a Ray task and yields outcomes as tasks finish.

    >>> with RayEngine(num_cpus=2) as engine:
    ...     for outcome in engine.map_unordered(train_category, jobs): ...

    Leaving the iteration early (Ctrl-C, an error in the caller) cancels the tasks still queued or running.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, cpus_per_task: float = 1.0
                 ) -> None:
        if cpus_per_task <= 0:
            raise ValueError(f"cpus_per_task must be > 0, got {cpus_per_task}")
        self.cpus_per_task = cpus_per_task
        self._owns_cluster = connect(address, num_cpus)

    def map_unordered(self, fn: Callable[[Any], R], items: Sequence[Any]) -> Iterator[TaskOutcome[R]]:
        options = task_resources(self.cpus_per_task)
        threads = max(1, int(self.cpus_per_task))
        pending = {_remote_job.options(**options).remote(fn, item, threads): i for i, item in enumerate(items)}
        logger.info("submitted %d Ray task(s) with %s", len(pending), options)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    try:
                        yield TaskOutcome(index, ray.get(ref), None)
                    except (ray.exceptions.RayError, Exception) as error:  # noqa: BLE001 - report, go on
                        yield TaskOutcome(index, None, _error_text(error))
        finally:
            for ref in pending:  # the caller stopped listening: do not leave work running on the cluster
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut down the local cluster if this engine started it."""
        if self._owns_cluster and ray.is_initialized():
            ray.shutdown()
            self._owns_cluster = False

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

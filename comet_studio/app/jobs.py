"""The app's only process-wide state: background jobs (one thread each) and a small in-memory cache.

A job runs a core call (training, a loss landscape) in its own thread with a stop ``Event``. The core
reports through ``on_round`` / ``on_progress``; pages and API clients read ``snapshot()``, so a page refresh
or a second browser tab sees the same job without disturbing it. Every job writes only its own run folder.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.features.cache import StopRequested
from ..core.training import RoundEvent

__all__ = ["Job", "JobRegistry", "JobStatus"]

logger = logging.getLogger(__name__)
JobStatus = Literal["running", "done", "stopped", "failed"]


@dataclass
class Job:
    """One background task. Fields are written by the job's thread under ``_lock``; read them through
    ``snapshot()`` (or ``latest_event()``) from other threads."""

    id: str
    kind: str
    label: str
    run_dir: Path | None
    owner: str | None = None  # the logged-in user who started it (None without logins)
    stop: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)
    status: JobStatus = "running"
    error: str | None = None
    stage: str = "starting"
    done: int = 0
    total: int = 0
    history: list[dict] = field(default_factory=list)
    result: Any = None
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the training paths, for galleries
    finished: float | None = None
    version: int = 0  # bumped on every change, so a poller can skip unchanged snapshots
    _latest: RoundEvent | None = None
    _stage_started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- written by the job's thread ---------------------------------------------------------------------
    def on_progress(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            if stage != self.stage:
                self._stage_started = time.time()
            self.stage, self.done, self.total = stage, done, total
            self.version += 1

    def on_round(self, event: RoundEvent) -> None:
        with self._lock:
            self.history.append(event.summary())
            self._latest = event
            self.version += 1

    def set_info(self, **values: Any) -> None:
        with self._lock:
            self.info.update(values)
            self.version += 1

    def _finish(self, status: JobStatus, *, result: Any = None, error: str | None = None) -> None:
        with self._lock:
            self.status, self.result, self.error = status, result, error
            self.finished = time.time()
            self.version += 1

    # -- read by pages and API clients -------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.status == "running"

    def latest_event(self) -> RoundEvent | None:
        with self._lock:
            return self._latest

    def eta_seconds(self) -> float | None:
        """Time left in the current stage, from its rate so far (None before the first step)."""
        with self._lock:
            if not self.active or self.done <= 0 or self.total <= 0:
                return None
            elapsed = time.time() - self._stage_started
            return elapsed / self.done * (self.total - self.done)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the job's state (the API's status answer)."""
        eta = self.eta_seconds()
        with self._lock:
            return {
                "job_id": self.id, "kind": self.kind, "label": self.label, "status": self.status,
                "stage": self.stage, "done": self.done, "total": self.total,
                "eta_seconds": None if eta is None else round(eta, 1),
                "run_id": self.run_dir.name if self.run_dir is not None else None,
                "error": self.error, "history": list(self.history), "version": self.version,
                "elapsed_seconds": round((self.finished or time.time()) - self.created, 1),
                "info": {k: v for k, v in self.info.items() if not k.startswith("_")},
            }


class JobRegistry:
    """Starts jobs, finds them again by id, stops them, and caches expensive objects (features, models)
    by key with least-recently-used eviction."""

    def __init__(self, *, cache_size: int = 6) -> None:
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._cache_size = cache_size

    # -- jobs --------------------------------------------------------------------------------------------
    def start(self, kind: str, label: str, target: Callable[[Job], Any], *, run_dir: Path | None = None,
              owner: str | None = None) -> Job:
        """Run ``target(job)`` in a new thread. Its return value becomes ``job.result``; ``StopRequested``
        or a set stop event marks the job stopped; any other exception marks it failed, with the message."""
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, label=label, run_dir=run_dir, owner=owner)
        thread = threading.Thread(target=self._run, args=(job, target), name=f"comet-{kind}-{job.id}", daemon=True)
        with self._lock:
            self._jobs[job.id] = job
            self._threads[job.id] = thread
        thread.start()
        return job

    @staticmethod
    def _run(job: Job, target: Callable[[Job], Any]) -> None:
        try:
            result = target(job)
        except StopRequested:
            job._finish("stopped")
        except Exception as error:  # the job's owner reads the message from the snapshot
            logger.exception("job %s (%s) failed", job.id, job.label)
            job._finish("failed", error=f"{type(error).__name__}: {error}")
        else:
            # A Stop that came after the last step stopped nothing: a result that says so wins.
            stopped = result.get("stopped", job.stop.is_set()) if isinstance(result, dict) else job.stop.is_set()
            job._finish("stopped" if stopped else "done", result=result)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(f"no job with id {job_id!r} in this app session (jobs live until the app restarts)")
        return job

    def jobs(self, kind: str | None = None) -> list[Job]:
        """Jobs of ``kind`` (all when None), newest first."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if kind is None or j.kind == kind]
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def latest(self, kind: str) -> Job | None:
        jobs = self.jobs(kind)
        return jobs[0] if jobs else None

    def stop(self, job_id: str) -> Job:
        """Ask a job to stop at its next step; returns at once."""
        job = self.get(job_id)
        job.stop.set()
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every job and wait for the threads (the app is closing)."""
        for job in self.jobs():
            job.stop.set()
        deadline = time.time() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.time()))

    # -- cache -------------------------------------------------------------------------------------------
    def cache_get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._cache:
                return None
            self._cache.move_to_end(key)
            return self._cache[key]

    def cache_put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def cached(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        """The cached value for ``key``, computed by ``factory()`` (outside the lock) when missing."""
        value = self.cache_get(key)
        if value is None:
            value = factory()
            self.cache_put(key, value)
        return value

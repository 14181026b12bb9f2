"""What every tab receives: the runs folder, the job registry, the data roots and who may see which run, and
the other tabs' components."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..core.data.folder import ScanBounds
from .components import DataUI, ExportUI, InspectUI, LandscapeUI, TestUI, TrainUI
from .jobs import Job, JobRegistry
from .paths import DataRoots, PathError, resolve_run
from .runs import RunInfo, list_runs

__all__ = ["AppContext", "user_of", "OWNER_FILE", "SCAN_FILES", "SCAN_DEPTH"]

OWNER_FILE = "owner.json"
SCAN_FILES = 50_000  # files one scan may see (images or not) before it stops with a message
SCAN_DEPTH = 16  # folder levels below the chosen folder


def user_of(request: gr.Request | None) -> str | None:
    """The logged-in user of a request (None without a login)."""
    return getattr(request, "username", None) if request is not None else None


@dataclass
class AppContext:
    """Built once per app. ``create_ui`` of each tab fills its slot; ``bind_events`` may use any slot, so
    every component exists before any event is wired (no import cycles between tabs).

    ``users`` is None for a studio without logins (everyone sees every run); with logins each run and job
    belongs to the user who started it, and only its owner and the ``admins`` see it."""

    runs_dir: Path
    registry: JobRegistry
    default_folder: str = ""
    demo_test_folder: str = ""  # labelled held-out demo cells (MVTec layout) for the Test tab, or ""
    data_roots: tuple[Path, ...] = ()
    users: frozenset[str] | None = None
    admins: frozenset[str] = frozenset()
    scan_files: int = SCAN_FILES
    scan_depth: int = SCAN_DEPTH
    blocks: gr.Blocks | None = None
    data: DataUI | None = None
    train: TrainUI | None = None
    inspect: InspectUI | None = None
    landscape: LandscapeUI | None = None
    test: TestUI | None = None
    export: ExportUI | None = None
    _scans: dict[str, threading.Event] = field(default_factory=dict, repr=False)
    _scans_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cache_dir(self) -> Path:
        """Thumbnails, heatmaps, exports and the demo folder: served, never committed, safe to delete."""
        return self.runs_dir / ".cache"

    @property
    def uploads_dir(self) -> Path:
        return self.runs_dir / ".uploads"

    # -- where a user may read ---------------------------------------------------------------------------
    def uploads_for(self, user: str | None) -> Path:
        """Where this user's uploads go: one folder per user once there are logins."""
        if self.users is None or user is None:
            return self.uploads_dir
        return self.uploads_dir / f"user-{re.sub(r'[^A-Za-z0-9_.-]', '_', user)}"

    def roots(self, user: str | None) -> DataRoots:
        """The data roots plus the default (demo) folder and this user's uploads."""
        extra = [self.demo_test_folder] if self.demo_test_folder else []
        return DataRoots.of([*self.data_roots, self.default_folder, *extra, self.uploads_for(user)])

    @contextmanager
    def scan_bounds(self, session: str | None, progress: Callable[[int], None] | None = None,
                    stop: threading.Event | None = None) -> Iterator[ScanBounds]:
        """Bounds of one scan; ``stop_scan(session)`` stops it (one scan per browser session)."""
        stop = stop or threading.Event()
        if session:
            with self._scans_lock:
                self._scans[session] = stop
        try:
            yield ScanBounds(max_files=self.scan_files, max_depth=self.scan_depth, confine=True, stop=stop,
                             progress=progress)
        finally:
            if session:
                with self._scans_lock:
                    if self._scans.get(session) is stop:
                        del self._scans[session]

    def stop_scan(self, session: str | None) -> bool:
        with self._scans_lock:
            stop = self._scans.get(session or "")
        if stop is not None:
            stop.set()
        return stop is not None

    # -- who sees which run and job ----------------------------------------------------------------------
    def sees(self, owner: str | None, user: str | None) -> bool:
        if self.users is None:
            return True
        return user is not None and (user in self.admins or owner == user)

    @staticmethod
    def owner(run_dir: Path) -> str | None:
        try:
            return json.loads((run_dir / OWNER_FILE).read_text()).get("user")
        except (OSError, ValueError, AttributeError):
            return None

    def claim(self, run_dir: Path, user: str | None) -> None:
        """Record the owner of a new run folder (only once there are logins)."""
        if self.users is not None and user is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / OWNER_FILE).write_text(json.dumps({"user": user}))

    def run_dir(self, run_id: str, user: str | None) -> Path:
        """The folder of a run this user may see; another user's run is refused like an unknown one."""
        path = resolve_run(self.runs_dir, run_id)
        if not self.sees(self.owner(path), user):
            raise PathError(f"run {run_id} not found in {self.runs_dir}")
        return path

    def runs(self, user: str | None) -> list[RunInfo]:
        return [r for r in list_runs(self.runs_dir) if self.sees(self.owner(r.path), user)]

    def run_choices(self, user: str | None = None) -> list[tuple[str, str]]:
        """(label, run id) pairs for a dropdown."""
        return [(run.label, run.id) for run in self.runs(user)]

    def job(self, job_id: str, user: str | None) -> Job:
        job = self.registry.get(job_id)
        if not self.sees(job.owner, user):
            raise KeyError(f"no job with id {job_id!r} in this app session (jobs live until the app restarts)")
        return job

    def jobs(self, kind: str, user: str | None) -> list[Job]:
        return [j for j in self.registry.jobs(kind) if self.sees(j.owner, user)]

    def latest_job(self, kind: str, user: str | None) -> Job | None:
        jobs = self.jobs(kind, user)
        return jobs[0] if jobs else None

"""Train a whole plant: every category folder under one root becomes a run folder under ``RUNS_DIR``.

``train_all`` is the one call behind ``comet-studio train-all``. Each sub-folder of the plant root is a
category: an MVTec-layout category (``train/`` + ``test/``, trained on ``train/``) or a raw folder of
images (trained on all of it). Every category is trained with ``workflows.run.train_run`` into
``RUNS_DIR/<category>/``, one job per category on an engine (``comet_studio.engines``: in this process or one
Ray task each). It is resumable: a category whose ``run.json`` says it finished with the same settings is
not trained again. One category's bad data or crash is recorded in its row and the others go on.

``RUNS_DIR/summary.csv`` (rewritten after every category) has one row per category::

    category, layout, images, skipped_files, rejected, seconds, status, error, run_dir

``status`` is ``trained``, ``done before`` (finished by an earlier call: its numbers come from its
run.json), ``stopped`` (interrupted: the next call continues it after its last completed round),
``error`` or ``pending``.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from ..core.config import ModelConfig, TrainConfig, config_to_dict
from ..core.data.mvtec import is_mvtec_category
from ..engines.engine import Engine, LocalEngine, describe_error
from ..core.features.cache import StopRequested
from ..core.io.atomic import write_csv_atomic
from ..core.io.trainer_state import STATE_FILE
from ..core.progress import Progress
from .run import train_run, training_folder

__all__ = ["SUMMARY_COLUMNS", "PlantCategory", "CategoryJob", "PlantResult", "find_plant_categories",
           "finished_run", "train_category", "train_all", "read_summary", "format_summary"]

Layout = Literal["mvtec", "folder"]
SUMMARY_COLUMNS = ("category", "layout", "images", "skipped_files", "rejected", "seconds", "status", "error",
                   "run_dir")
# Where a run trains, not what it learns: a run finished on another device still counts as finished.
_PLACEMENT_KEYS = ("device", "feature_batch_size")


@dataclass(frozen=True)
class PlantCategory:
    """One category of a plant: its name (the folder name), absolute folder and layout."""

    name: str
    path: Path
    layout: Layout


@dataclass(frozen=True)
class CategoryJob:
    """Everything one worker needs to train one category (picklable: it travels to Ray workers)."""

    category: PlantCategory
    run_dir: Path
    model: ModelConfig
    train: TrainConfig


@dataclass
class PlantResult:
    runs_dir: Path
    rows: list[dict] = field(default_factory=list)  # one per category, sorted by name
    summary_csv: Path | None = None

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row["status"] == status)


def find_plant_categories(root: str | Path, *, names: tuple[str, ...] | None = None,
                          exclude: str | Path | None = None) -> list[PlantCategory]:
    """The categories under ``root``: every visible sub-folder (``exclude``, e.g. the runs folder when it lies
    inside the root, is left out), filtered to ``names`` when given. A sub-folder without usable images is
    still listed: training it fails with a clear reason in its summary row."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"plant root not found or not a folder: {root}")
    if is_mvtec_category(root):
        raise ValueError(f"{root} is itself one category (it holds train/ and test/): train it with "
                         f"'comet-studio train', or give train-all the folder that holds the categories")
    skip = Path(exclude).expanduser().resolve() if exclude is not None else None
    found = [PlantCategory(p.name, p, "mvtec" if is_mvtec_category(p) else "folder")
             for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and p != skip]
    if not found:
        raise FileNotFoundError(f"{root} holds no category folders (expected one sub-folder per category: an "
                                f"MVTec-layout category with train/ and test/, or a folder of images)")
    if names:
        known = {c.name for c in found}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"categories {missing} not found under {root}; available: {sorted(known)}")
        found = [c for c in found if c.name in names]
    return found


def _settings(config) -> dict:
    data = config_to_dict(config)
    return {k: v for k, v in data.items() if k not in _PLACEMENT_KEYS}


def finished_run(job: CategoryJob) -> dict | None:
    """The run.json of ``job.run_dir`` when that run finished (not stopped, model saved) with the job's
    settings, else None. A finished run with other settings raises ValueError: training again would
    overwrite it, and keeping it would mix settings in one runs folder."""
    path = job.run_dir / "run.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or half-written: not finished
        return None
    model_files = (job.run_dir / "model" / "model.safetensors", job.run_dir / "model" / "model.json")
    if info.get("stopped", True) or not all(p.exists() for p in model_files):
        return None
    stored = (info.get("model"), {k: v for k, v in (info.get("train") or {}).items() if k not in _PLACEMENT_KEYS})
    if stored != (_settings(job.model), _settings(job.train)):
        raise ValueError(f"{job.run_dir} holds a finished run trained with other settings; use another --out, "
                         f"or delete that folder to train it again with these settings")
    return info


def _row(job: CategoryJob, status: str, **values) -> dict:
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(category=job.category.name, layout=job.category.layout, run_dir=str(job.run_dir), status=status)
    row.update(values)
    return row


def _row_from_run(job: CategoryJob, info: dict, status: str, seconds: float | None = None) -> dict:
    timings = info.get("timings", {})
    if seconds is None:
        seconds = timings.get("extract_seconds", 0.0) + timings.get("train_seconds", 0.0)
    return _row(job, status, images=info.get("n_images", ""), skipped_files=info.get("n_skipped", ""),
                rejected=info.get("n_rejected", ""), seconds=round(float(seconds), 2))


def train_category(job: CategoryJob, *, progress: Progress | None = None,
                   stop: threading.Event | None = None) -> dict:
    """Train one category into ``job.run_dir`` (unless it already finished) and return its summary row.
    Failures (no usable images, unreadable folder, a crash in training) come back as an ``error`` row."""
    started = time.perf_counter()
    try:
        info = finished_run(job)
        if info is not None:
            return _row_from_run(job, info, "done before")
        folder = training_folder(job.category.path)
        # A run stopped or killed after a completed round goes on from there (train_run refuses, saying
        # why, when its images or settings changed since); otherwise training starts from the first round.
        resume = (job.run_dir / STATE_FILE).exists()
        run = train_run(folder, job.run_dir, job.model, job.train, progress=progress, stop=stop, resume=resume)
    except StopRequested:
        return _row(job, "stopped", seconds=round(time.perf_counter() - started, 2))
    except Exception as error:  # noqa: BLE001 - one category's bad data must not stop the plant
        return _row(job, "error", error=describe_error(error), seconds=round(time.perf_counter() - started, 2))
    info = json.loads((run.run_dir / "run.json").read_text())
    return _row_from_run(job, info, "stopped" if run.stopped else "trained", time.perf_counter() - started)


def _settle(job: CategoryJob, rows: list[dict], index: int) -> bool:
    """Fill ``rows[index]`` when the job needs no training (finished before, or a run with other settings
    is in the way); True when it was settled that way."""
    try:
        info = finished_run(job)
    except ValueError as error:
        rows[index] = _row(job, "error", error=describe_error(error))
        return True
    if info is not None:
        rows[index] = _row_from_run(job, info, "done before")
    return info is not None


def _write_summary(path: Path, rows: list[dict]) -> None:
    write_csv_atomic(path, rows, SUMMARY_COLUMNS)  # a reader (or an interrupted call) never sees half a summary


def read_summary(path: str | Path) -> list[dict]:
    """Rows of a summary.csv (as strings)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def train_all(plant_root: str | Path, runs_dir: str | Path, model_config: ModelConfig | None = None,
              train_config: TrainConfig | None = None, *, engine: Engine | None = None,
              categories: tuple[str, ...] | None = None, progress: Progress | None = None,
              stop: threading.Event | None = None, on_row: Callable[[dict], None] | None = None) -> PlantResult:
    """Train every category of ``plant_root`` into ``runs_dir/<category>/`` on ``engine`` (default: this
    process) and write ``runs_dir/summary.csv`` after each one. ``progress`` and ``stop`` reach training only
    on the local engine; with Ray, stopping the iteration (Ctrl-C) cancels the tasks still running, and the
    next call trains what is missing. ``on_row`` sees each category's row as it finishes."""
    engine = engine or LocalEngine()
    runs = Path(runs_dir).expanduser().resolve()
    found = find_plant_categories(plant_root, names=categories, exclude=runs)
    runs.mkdir(parents=True, exist_ok=True)
    model_config, train_config = model_config or ModelConfig(), train_config or TrainConfig()
    jobs = [CategoryJob(c, runs / c.name, model_config, train_config) for c in found]
    result = PlantResult(runs, [_row(job, "pending") for job in jobs], runs / "summary.csv")
    todo = [i for i, job in enumerate(jobs) if not _settle(job, result.rows, i)]  # no task for finished ones
    local = isinstance(engine, LocalEngine)
    # Tqdm bars and a threading.Event cannot travel to another process; a Ray job gets the bare function.
    job_fn = partial(train_category, progress=progress, stop=stop) if local else train_category
    try:
        _write_summary(result.summary_csv, result.rows)
        for outcome in engine.map_unordered(job_fn, [jobs[i] for i in todo]):
            index = todo[outcome.index]
            job = jobs[index]
            row = outcome.value if outcome.error is None else _row(job, "error", error=outcome.error)
            result.rows[index] = row
            _write_summary(result.summary_csv, result.rows)
            if on_row is not None:
                on_row(row)
            if stop is not None and stop.is_set():
                break
    finally:
        _write_summary(result.summary_csv, result.rows)
    return result


def format_summary(rows: list[dict]) -> str:
    """The summary as an aligned text table (errors shortened to one line each)."""
    headers = ("category", "layout", "images", "skipped", "rejected", "seconds", "status")
    keys = ("category", "layout", "images", "skipped_files", "rejected", "seconds", "status")
    table = [headers] + [tuple(str(row[k]) for k in keys) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for row in rows:
        if row["error"]:
            error = row["error"] if len(row["error"]) <= 160 else row["error"][:157] + "..."
            lines.append(f"{row['category']}: {error}")
    return "\n".join(lines)

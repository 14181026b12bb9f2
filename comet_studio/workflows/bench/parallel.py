"""The grid's cells as parallel jobs on an engine (``comet_studio.engines``: Ray tasks on a cluster).

Two waves: one job per category and backbone setting (detectors may differ in ``pool_padding``) extracts its
features into the on-disk cache (``features.py``), then one job per cell reads them back and runs
``run_cell``. Every job names files by absolute path, so the output folder must be on storage that every node
sees. Rows come back to the caller as cells finish, so results.csv stays resumable exactly as with the
sequential loop in ``runner.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.config import BackboneConfig
from ...core.data import LabelledSet, load_mvtec
from ...engines.engine import Engine
from .features import FeatureStore, load_or_extract
from .grid import BenchConfig, Cell
from .cell import cap_train, error_row, run_cell

__all__ = ["run_cells_on"]


@dataclass(frozen=True)
class _CategoryJob:
    category: str
    folder: Path
    config: BenchConfig
    out: Path
    backbone: BackboneConfig  # the features of this category's cells of one backbone setting


@dataclass(frozen=True)
class _CellJob:
    cell: Cell
    data: _CategoryJob


def _features(job: _CategoryJob) -> tuple[LabelledSet, FeatureStore, int]:
    """The category's (capped) dataset and features, from the cache, extracting what it lacks."""
    dataset = cap_train(load_mvtec(job.folder), job.config.max_train)
    paths = list(dataset.train) + [i.path for i in dataset.test]
    store, count = load_or_extract(job.out / "features", job.category, paths, job.backbone,
                                   device=job.config.device)
    return dataset, store, count


def _extract_job(job: _CategoryJob) -> int:
    return _features(job)[2]


def _cell_job(job: _CellJob) -> dict:
    dataset, store, _ = _features(job.data)  # read back from the cache the first wave wrote
    return run_cell(job.cell, dataset, store, job.data.config, job.data.out / "cells")


def run_cells_on(engine: Engine, pending: list[Cell], categories: dict[str, Path], config: BenchConfig,
                 out: Path, record: Callable[[Cell, dict], None]) -> int:
    """Run ``pending`` on ``engine``, calling ``record(cell, row)`` as each cell finishes (a category whose
    features cannot be extracted gives every one of its cells an error row). Returns how many images had
    their features extracted now."""
    out = Path(out).resolve()

    def key(cell: Cell) -> tuple[str, BackboneConfig]:  # one extraction per category and backbone setting
        return cell.category, config.backbone_config(cell.model)

    jobs = {(name, backbone): _CategoryJob(name, Path(categories[name]).resolve(), config, out, backbone)
            for name, backbone in dict.fromkeys(key(c) for c in pending)}
    keys = list(jobs)
    extracted, broken = 0, {}
    for outcome in engine.map_unordered(_extract_job, [jobs[k] for k in keys]):
        if outcome.error is None:
            extracted += outcome.value
        else:
            broken[keys[outcome.index]] = f"feature extraction failed: {outcome.error}"
    for cell in (c for c in pending if key(c) in broken):
        record(cell, error_row(cell, broken[key(cell)]))
    cell_jobs = [_CellJob(c, jobs[key(c)]) for c in pending if key(c) not in broken]
    for outcome in engine.map_unordered(_cell_job, cell_jobs):
        cell = cell_jobs[outcome.index].cell
        record(cell, outcome.value if outcome.error is None else error_row(cell, outcome.error))
    return extracted

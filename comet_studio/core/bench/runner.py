"""Run the grid: for each cell, plant contamination, fit on cached features, evaluate, record one CSV row.

Output folder::

    bench.json                 the settings every row shares (a resumed bench must match them)
    results.csv                one row per cell, rewritten atomically after every cell (resumable)
    cells/<category>/<cell>.json   the planted files, the test set and the metrics of that cell
    features/*.pt              the frozen-backbone features of each category (extracted once)
    results.md, *.html, *.png  the report (see ``report.py``)

Model selection inside every run uses only training data (the trainer's held-out split of the
contaminated training set); test labels are used for the metrics alone.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import save_json
from ..data import ContaminatedSet, LabelledSet, contaminate, load_mvtec
from ..evaluation import evaluate_model, image_auroc, rejection_quality
from ..model import AnomalyModel
from .features import FeatureStore, load_or_extract
from .grid import BenchConfig, Cell, build_cells, cell_configs, find_categories
from .report import ReportFiles, write_report

if TYPE_CHECKING:
    from ..distributed.engine import Engine

__all__ = ["COLUMNS", "BenchResult", "run_bench", "run_cell", "read_results", "cap_train"]

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

KEY_COLUMNS = ("category", "model", "method", "noise", "seed", "protocol")
METRIC_COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "f1_max", "verdict_precision", "verdict_recall",
                  "planted_in_lowest", "planted_auroc", "rejection_precision", "rejection_recall", "fit_seconds")
# Metrics added after the first results.csv files were written: read back as NaN from older rows.
LATER_COLUMNS = ("verdict_precision", "verdict_recall")
COUNT_COLUMNS = ("n_train", "n_planted", "n_test")
COLUMNS = KEY_COLUMNS + METRIC_COLUMNS + COUNT_COLUMNS + ("error", "finished")


@dataclass(frozen=True)
class BenchResult:
    out_dir: Path
    rows: list[dict]  # every row of results.csv, this run's and earlier ones
    computed: int  # cells run now
    reused: int  # cells found finished in results.csv
    failed: int  # cells of this grid whose row holds an error
    extracted: int  # images whose features were extracted now (0 when the cache covered everything)
    report: ReportFiles


def _row_key(row: dict) -> tuple:
    return (row["category"], row["model"], row["method"], f"{float(row['noise']):.6g}", int(row["seed"]),
            row["protocol"])


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results.csv with numbers parsed (NaN where a metric does not apply)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in LATER_COLUMNS:
            row.setdefault(column, "")
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}: it was written by another tool or version; "
                             f"use a new --out folder")
        row["noise"] = float(row["noise"])
        row["seed"] = int(row["seed"])
        for column in METRIC_COLUMNS:
            row[column] = float(row[column]) if row[column] != "" else math.nan
        for column in COUNT_COLUMNS:
            row[column] = int(row[column]) if row[column] != "" else 0
    return rows


def _write_results(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(rows, key=_row_key))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def _check_settings(out: Path, config: BenchConfig) -> None:
    """A resumed bench must share the settings that change every number; the grid axes may grow."""
    path = out / "bench.json"
    settings = config.settings()
    if path.exists():
        stored = json.loads(path.read_text()).get("settings")
        if stored != settings:
            raise ValueError(f"{out} holds a bench run with settings {stored}, but this one asks for {settings}; "
                             f"use a new --out folder (or the same settings) so that the rows stay comparable")
    save_json(path, {"settings": settings, "note": "model selection uses only the contaminated training set "
                                                   "(a held-out split of it); test labels are used for metrics only"})


def cap_train(dataset: LabelledSet, max_train: int | None) -> LabelledSet:
    """At most ``max_train`` training images, one fixed seeded subset for every cell (so cells compare)."""
    if max_train is None or len(dataset.train) <= max_train:
        return dataset
    kept = sorted(random.Random(0).sample(list(dataset.train), max_train))
    return replace(dataset, train=tuple(kept))


def _empty_row(cell: Cell) -> dict:
    row: dict = {c: math.nan for c in METRIC_COLUMNS}
    row.update({"category": cell.category, "model": cell.model, "method": cell.method, "noise": cell.noise,
                "seed": cell.seed, "protocol": cell.protocol, "n_train": 0, "n_planted": 0, "n_test": 0,
                "error": ""})
    return row


def _rejection(data: ContaminatedSet, model: AnomalyModel) -> dict[str, float]:
    """Did training single out the planted images? ``flagged`` = final training score above the IQR fence T,
    which is exactly what CoMet down-weights and refinement rejects (for the baseline: what T would flag)."""
    result = model.result_
    planted = np.isin(np.asarray(data.train), np.asarray(data.planted))
    flagged = result.scores > result.threshold
    quality = rejection_quality(planted, result.weights, result.scores, rejected=flagged)
    quality["planted_auroc"] = image_auroc(planted.astype(int), result.scores)
    return quality


def run_cell(cell: Cell, dataset: LabelledSet, store: FeatureStore, config: BenchConfig,
             cells_dir: Path | None = None) -> dict:
    """Train and evaluate one cell; any failure is recorded in the row's ``error`` (the grid goes on)."""
    row = _empty_row(cell)
    record: dict = {"cell": row.copy()}
    try:
        model_config, train_config = cell_configs(cell, config)
        data = contaminate(dataset, cell.noise, seed=cell.seed, protocol=cell.protocol)  # type: ignore[arg-type]
        row.update(n_train=len(data.train), n_planted=len(data.planted), n_test=len(data.test))
        record.update(planted=list(data.planted), test=[i.path for i in data.test])
        features = store.take(data.train)
        model = AnomalyModel(model_config, train=train_config)
        start = time.perf_counter()  # fit computes the memory prior (comet+prior) too: timed with it
        model.fit(data.train, features=features)
        row["fit_seconds"] = time.perf_counter() - start
        metrics = evaluate_model(model, data.test, features=store.take([i.path for i in data.test]))
        row.update(image_auroc=metrics["image_auroc"], pixel_auroc=metrics["pixel_auroc"], aupro=metrics["aupro"],
                   f1_max=metrics["image_f1_max"], verdict_precision=metrics["verdict_precision"],
                   verdict_recall=metrics["verdict_recall"])
        row.update({k: v for k, v in _rejection(data, model).items() if k in METRIC_COLUMNS})
        record["best_round"] = model.result_.best_round
    except Exception as error:  # noqa: BLE001 - one broken cell must not stop the grid
        logger.debug("cell %s failed", cell, exc_info=True)
        row["error"] = f"{type(error).__name__}: {error}".replace("\n", " ")
    row["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cells_dir is not None:
        record["cell"] = row
        path = cells_dir / cell.category / f"{cell.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_json(path, record)
    return row


def run_bench(data_root: str | Path, out_dir: str | Path, config: BenchConfig, *,
              progress: Progress | None = None, png: bool = True, engine: Engine | None = None) -> BenchResult:
    """Run every cell of ``config`` over the categories of ``data_root`` that ``out_dir`` does not already
    hold as finished rows (cells with an error are retried), then write the report (``png=False``: charts
    as HTML only). With an ``engine`` (``core.distributed``, e.g. Ray) the cells run as parallel jobs
    (``parallel.py``); without one, one after the other in this process."""
    categories = find_categories(data_root, config.categories)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    results = out / "results.csv"
    rows = {_row_key(r): r for r in read_results(results)}
    cells = build_cells(list(categories), config)
    pending = [c for c in cells if c.key not in rows or rows[c.key]["error"]]
    done = len(cells) - len(pending)
    if progress is not None:
        progress("cells", done, len(cells))

    def record(cell: Cell, row: dict) -> None:
        nonlocal done
        rows[cell.key] = row
        _write_results(results, list(rows.values()))
        done += 1
        if progress is not None:
            progress("cells", done, len(cells))

    if engine is not None:
        from .parallel import run_cells_on

        extracted = run_cells_on(engine, pending, categories, config, out, record)
    else:
        extracted = 0
        for category in dict.fromkeys(c.category for c in pending):
            dataset = cap_train(load_mvtec(categories[category]), config.max_train)
            paths = list(dataset.train) + [i.path for i in dataset.test]
            store, count = load_or_extract(out / "features", category, paths, config.backbone_config(),
                                           device=config.device, progress=progress)
            extracted += count
            for cell in (c for c in pending if c.category == category):
                record(cell, run_cell(cell, dataset, store, config, out / "cells"))
    all_rows = read_results(results) if results.exists() else []
    if not results.exists():
        _write_results(results, [])
    grid_keys = {c.key for c in cells}
    failed = sum(1 for r in all_rows if _row_key(r) in grid_keys and r["error"])
    report = write_report(out, all_rows, settings=config.settings(), png=png)
    return BenchResult(out_dir=out, rows=all_rows, computed=len(pending), reused=len(cells) - len(pending),
                       failed=failed, extracted=extracted, report=report)

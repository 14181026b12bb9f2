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
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.data import load_mvtec
from ...core.io.atomic import write_csv_atomic, write_json_atomic
from ...core.progress import Progress
from .cell import COLUMNS, COUNT_COLUMNS, LATER_COLUMNS, METRIC_COLUMNS, cap_train, run_cell
from .features import load_or_extract
from .grid import BenchConfig, Cell, build_cells, find_categories
from .report import ReportFiles, write_report

if TYPE_CHECKING:
    from ...engines.engine import Engine

__all__ = ["COLUMNS", "BenchResult", "run_bench", "run_cell", "read_results", "cap_train"]


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


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a bench table (results.csv, peers.csv) as text; none when the file does not exist yet."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results.csv with numbers parsed (NaN where a metric does not apply)."""
    path = Path(path)
    rows = read_rows(path)
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
    write_csv_atomic(path, sorted(rows, key=_row_key), COLUMNS, extrasaction="ignore")


def _check_settings(out: Path, config: BenchConfig) -> None:
    """A resumed bench must share the settings that change every number; the grid axes may grow."""
    path = out / "bench.json"
    settings = config.settings()
    if path.exists():
        stored = json.loads(path.read_text()).get("settings")
        if stored != settings:
            raise ValueError(f"{out} holds a bench run with settings {stored}, but this one asks for {settings}; "
                             f"use a new --out folder (or the same settings) so that the rows stay comparable")
    write_json_atomic(path, {"settings": settings, "note": "model selection uses only the contaminated training set "
                                                   "(a held-out split of it); test labels are used for metrics only"})


def run_bench(data_root: str | Path, out_dir: str | Path, config: BenchConfig, *,
              progress: Progress | None = None, png: bool = True, engine: Engine | None = None) -> BenchResult:
    """Run every cell of ``config`` over the categories of ``data_root`` that ``out_dir`` does not already
    hold as finished rows (cells with an error are retried), then write the report (``png=False``: charts
    as HTML only). With an ``engine`` (``comet_studio.engines``, e.g. Ray) the cells run as parallel jobs
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
            stores = {}  # one feature store per distinct backbone setting among the category's cells
            for cell in (c for c in pending if c.category == category):
                backbone = config.backbone_config(cell.model)
                if backbone not in stores:
                    stores[backbone], count = load_or_extract(out / "features", category, paths, backbone,
                                                              device=config.device, progress=progress)
                    extracted += count
                record(cell, run_cell(cell, dataset, stores[backbone], config, out / "cells"))
    all_rows = read_results(results) if results.exists() else []
    if not results.exists():
        _write_results(results, [])
    grid_keys = {c.key for c in cells}
    failed = sum(1 for r in all_rows if _row_key(r) in grid_keys and r["error"])
    report = write_report(out, all_rows, settings=config.settings(), png=png)
    return BenchResult(out_dir=out, rows=all_rows, computed=len(pending), reused=len(cells) - len(pending),
                       failed=failed, extracted=extracted, report=report)

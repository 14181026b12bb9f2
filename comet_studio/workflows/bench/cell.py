"""One cell of the grid: plant contamination, fit on cached features, evaluate, and return its CSV row.

Both ways of running the grid (the sequential loop in ``runner.py`` and the engine jobs in ``parallel.py``)
call ``run_cell``; the row's columns are defined here, once, for both and for ``results.csv``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...core.data import ContaminatedSet, LabelledSet, contaminate
from ...core.evaluation import evaluate_model, image_auroc, rejection_quality
from ...core.io.atomic import write_json_atomic
from ...core.model import AnomalyModel
from .features import FeatureStore
from .grid import BenchConfig, Cell, cell_configs

__all__ = ["KEY_COLUMNS", "METRIC_COLUMNS", "LATER_COLUMNS", "COUNT_COLUMNS", "COLUMNS", "empty_row", "error_row",
           "cap_train", "run_cell"]

logger = logging.getLogger(__name__)

KEY_COLUMNS = ("category", "model", "method", "noise", "seed", "protocol")
METRIC_COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "f1_max", "verdict_precision", "verdict_recall",
                  "planted_in_lowest", "planted_auroc", "rejection_precision", "rejection_recall", "fit_seconds",
                  "predict_images_per_second")
# Metrics added after the first results.csv files were written: read back as NaN from older rows.
# predict_images_per_second: end to end from the files, measured for peer rows (``peers.py``); the grid's own
# cells score cached features, so theirs is NaN.
LATER_COLUMNS = ("verdict_precision", "verdict_recall", "predict_images_per_second")
COUNT_COLUMNS = ("n_train", "n_planted", "n_test")
COLUMNS = KEY_COLUMNS + METRIC_COLUMNS + COUNT_COLUMNS + ("error", "finished")


def cap_train(dataset: LabelledSet, max_train: int | None) -> LabelledSet:
    """At most ``max_train`` training images, one fixed seeded subset for every cell (so cells compare)."""
    if max_train is None or len(dataset.train) <= max_train:
        return dataset
    kept = sorted(random.Random(0).sample(list(dataset.train), max_train))
    return replace(dataset, train=tuple(kept))


def empty_row(cell: Cell) -> dict:
    """The row of ``cell`` before anything is measured: keys filled, metrics NaN, no error."""
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
    row = empty_row(cell)
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
        # The store caches the images as they are; test-time views are extracted here, per cell.
        test_features = None if model_config.tta else store.take([i.path for i in data.test])
        metrics = evaluate_model(model, data.test, features=test_features)
        row.update(image_auroc=metrics["image_auroc"], pixel_auroc=metrics["pixel_auroc"], aupro=metrics["aupro"],
                   f1_max=metrics["image_f1_max"], verdict_precision=metrics["verdict_precision"],
                   verdict_recall=metrics["verdict_recall"])
        row.update({k: v for k, v in _rejection(data, model).items() if k in METRIC_COLUMNS})
        record["best_round"] = model.result_.best_round
    except Exception as error:  # noqa: BLE001 - one broken cell must not stop the grid
        logger.debug("cell %s failed", cell, exc_info=True)
        row["error"] = f"{type(error).__name__}: {error}".replace("\n", " ")
    row["finished"] = _now()
    if cells_dir is not None:
        record["cell"] = row
        path = cells_dir / cell.category / f"{cell.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    return row


def error_row(cell: Cell, error: str) -> dict:
    """The finished row of a cell that could not run at all (e.g. its category's features failed)."""
    row = empty_row(cell)
    row.update(error=error, finished=_now())
    return row


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

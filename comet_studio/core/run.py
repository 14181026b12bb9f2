"""A training run as a folder: model, per-sample weights, history, skipped files, overrides.

``train_run`` is the one call behind ``comet-studio train`` and the app's Train button.

Run folder layout::

    model/model.safetensors, model/model.json   the trained head + post-processing (+ config)
    samples.csv      path, score, weight, rejected, override, validation   (one row per training image)
    history.json     per-round losses, lambda, threshold (written live, after every round)
    skipped.csv      files that could not be used, with the reason
    overrides.json   the user's per-sample overrides (path -> "good" | "exclude")
    run.json         configs, data source, timings, device, whether training was stopped early
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .config import ModelConfig, TrainConfig, config_to_dict, save_json
from .data.folder import ImageFolder, scan_folder
from .data.mvtec import is_mvtec_category
from .model import AnomalyModel
from .training.trainer import RoundEvent
from .training.weighting import Override

__all__ = ["RunResult", "training_folder", "train_run", "read_samples", "read_overrides", "write_overrides"]

Progress = Callable[[str, int, int], None]


@dataclass
class RunResult:
    run_dir: Path
    model: AnomalyModel
    folder: ImageFolder
    stopped: bool
    timings: dict[str, float]


def training_folder(data_dir: str | Path) -> ImageFolder:
    """The training images of ``data_dir``: its ``train/`` folder for an MVTec AD category, else the whole
    folder (recursively). Skipped files are listed in the result."""
    data_dir = Path(data_dir)
    root = data_dir / "train" if is_mvtec_category(data_dir) else data_dir
    return scan_folder(root)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_overrides(run_dir: str | Path) -> dict[str, Override]:
    path = Path(run_dir) / "overrides.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    bad = {k: v for k, v in data.items() if v not in ("good", "exclude")}
    if bad:
        raise ValueError(f"{path}: overrides must be 'good' or 'exclude', got {bad}")
    return data


def write_overrides(run_dir: str | Path, overrides: dict[str, Override]) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    save_json(Path(run_dir) / "overrides.json", dict(sorted(overrides.items())))


def read_samples(run_dir: str | Path) -> list[dict]:
    """Rows of samples.csv with numbers parsed."""
    with open(Path(run_dir) / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["score"] = float(row["score"])
        row["weight"] = float(row["weight"])
        row["rejected"] = row["rejected"] == "1"
        row["validation"] = row["validation"] == "1"
    return rows


def _write_samples(path: Path, paths, result, overrides: dict[str, Override]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "weight", "rejected", "override", "validation"])
    validation = set(result.validation_indices.tolist())
    for i, p in enumerate(paths):
        writer.writerow([p, f"{result.scores[i]:.6g}", f"{result.weights[i]:.6g}", int(result.rejected[i]),
                         overrides.get(p, ""), int(i in validation)])
    _atomic_text(path, buffer.getvalue())


def _write_skipped(path: Path, folder: ImageFolder) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows((s.path, s.reason) for s in folder.skipped)
    _atomic_text(path, buffer.getvalue())


def train_run(
    data: str | Path | ImageFolder,
    out_dir: str | Path,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    overrides: dict[str, Override] | None = None,
    callback: Callable[[RoundEvent], None] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    features=None,
) -> RunResult:
    """Scan ``data`` (a folder, an MVTec category, or an already scanned ImageFolder), train, and write the
    run folder. ``overrides`` (by path) default to those already saved in ``out_dir``. Returns even when
    stopped early: the best model so far is saved."""
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = data if isinstance(data, ImageFolder) else training_folder(data)
    _write_skipped(out / "skipped.csv", folder)
    overrides = read_overrides(out) if overrides is None else dict(overrides)
    unknown = sorted(set(overrides) - set(folder.paths))
    if unknown:
        raise ValueError(f"{len(unknown)} override(s) name images that are not in the folder, e.g. {unknown[0]}")
    write_overrides(out, overrides)
    index = {p: i for i, p in enumerate(folder.paths)}
    by_index = {index[p]: v for p, v in overrides.items()}

    history: list[dict] = []

    def on_round(event: RoundEvent) -> None:
        history.append(event.summary())
        _atomic_text(out / "history.json", json.dumps(history, indent=2))
        if callback is not None:
            callback(event)

    model = AnomalyModel(model_config, train=train_config)
    started = time.perf_counter()
    if features is None:
        features = model.extract(folder.paths, progress=progress, stop=stop)
    extract_seconds = time.perf_counter() - started
    prior = None
    if train_config.prior == "memory":
        from .detectors.memory import memory_prior_scores
        prior = memory_prior_scores(features, model_config.memory, seed=train_config.seed)
    model.fit(folder.paths, features=features, overrides=by_index, prior_scores=prior, callback=on_round,
              progress=progress, stop=stop)
    train_seconds = time.perf_counter() - started - extract_seconds
    model.save(out / "model")
    _write_samples(out / "samples.csv", folder.paths, model.result_, overrides)
    rounds = max(len(history), 1)
    timings = {"extract_seconds": extract_seconds, "extract_images_per_second": len(folder) / max(extract_seconds, 1e-9),
               "train_seconds": train_seconds, "seconds_per_round": train_seconds / rounds}
    save_json(out / "run.json", {
        "version": __version__, "data": folder.root, "n_images": len(folder), "n_skipped": len(folder.skipped),
        "device": str(model.device_), "stopped": model.result_.stopped, "best_round": model.result_.best_round,
        "threshold": model.result_.threshold, "n_rejected": int(np.sum(model.result_.rejected)),
        "timings": timings, "model": config_to_dict(model_config), "train": config_to_dict(train_config)})
    return RunResult(run_dir=out, model=model, folder=folder, stopped=model.result_.stopped, timings=timings)

"""Finished runs as the app lists them, their samples with the current overrides, and the cached objects built
from a run (model, features)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.config import BackboneConfig, config_to_dict
from ..core.model import AnomalyModel
from ..workflows.run import read_overrides, read_samples
from ..core.training.presets import DEFAULT_STRATEGY, comet_parts
from .jobs import JobRegistry
from .paths import resolve_run, run_ids

__all__ = ["STRATEGY_LABELS", "RunInfo", "strategy_name", "read_run", "list_runs", "run_choices", "with_overrides",
           "feature_key", "run_model", "run_features"]


# The strategies the app offers, by the names it shows (the Train tab's choices, the run listing's labels).
STRATEGY_LABELS = {"CoMet": DEFAULT_STRATEGY, "baseline": "baseline", "refinement": "refine"}
_PART_NAMES = {"soft_weights": "SCL", "meta": "meta", "adaptive_l2": "adaptive L2"}


@dataclass(frozen=True)
class RunInfo:
    id: str
    path: Path
    data: str
    n_images: int
    detector: str
    strategy: str
    image_size: int
    stopped: bool
    threshold: float

    @property
    def label(self) -> str:
        stopped = " (stopped early)" if self.stopped else ""
        return f"{self.id} · {self.strategy} · {self.detector} {self.image_size}px · {self.n_images} images{stopped}"


def strategy_name(comet: dict) -> str:
    """A short name for a CoMet configuration: the label of the strategy whose CoMet parts it has (baseline,
    refinement, CoMet), else CoMet without some parts (and + refine)."""
    on = {part for part in _PART_NAMES.keys() | {"refine"} if comet.get(part)}
    for label, strategy in STRATEGY_LABELS.items():
        if on == set(comet_parts(strategy)):
            return label
    missing = [name for part, name in _PART_NAMES.items() if part in comet_parts(DEFAULT_STRATEGY) and part not in on]
    name = "CoMet" + (f" without {', '.join(missing)}" if missing else "")
    return name + (" + refine" if "refine" in on else "")


def _number(value: Any) -> float:
    """A number from run.json: NaN where it is absent or null (strict JSON writes NaN as null)."""
    return math.nan if value is None else float(value)


def read_run(path: Path) -> RunInfo | None:
    """The run in ``path``, or None while it has no run.json (still training, or stopped before the end)."""
    try:
        meta = json.loads((path / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    model, train = meta.get("model", {}), meta.get("train", {})
    return RunInfo(id=path.name, path=path, data=str(meta.get("data", "")), n_images=int(meta.get("n_images", 0)),
                   detector=str(model.get("detector", "?")), strategy=strategy_name(train.get("comet", {})),
                   image_size=int(model.get("backbone", {}).get("image_size", 0)),
                   stopped=bool(meta.get("stopped", False)), threshold=_number(meta.get("threshold")))


def list_runs(runs_dir: Path) -> list[RunInfo]:
    """Finished runs under ``runs_dir``, newest first."""
    runs = (read_run(runs_dir / name) for name in run_ids(runs_dir))
    return [run for run in runs if run is not None]


def run_choices(runs_dir: Path) -> list[tuple[str, str]]:
    """(label, run id) pairs for a dropdown."""
    return [(run.label, run.id) for run in list_runs(runs_dir)]


def with_overrides(run_dir: Path, rows: list[dict]) -> list[dict]:
    """``rows`` of the run's samples.csv with their override column set from overrides.json, which may be newer
    (an override is saved at once, samples.csv only by a training)."""
    overrides = read_overrides(run_dir)
    for row in rows:
        row["override"] = overrides.get(row["path"], "")
    return rows


def feature_key(backbone: BackboneConfig, paths: tuple[str, ...]) -> tuple:
    """Cache key of training features: the backbone config and the files (names, sizes, times)."""
    digest = hashlib.sha1()
    for p in paths:
        stat = Path(p).stat()
        digest.update(f"{p}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return ("features", json.dumps(config_to_dict(backbone), sort_keys=True), digest.hexdigest())


def run_model(registry: JobRegistry, runs_dir: Path, run_id: str) -> AnomalyModel:
    """The trained model of a run, loaded once and cached (a new training writes a new run folder)."""
    path = resolve_run(runs_dir, run_id)
    weights = path / "model" / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"run {run_id} has no trained model yet (still training, or it failed)")
    key = ("model", str(path), weights.stat().st_mtime_ns)
    return registry.cached(key, lambda: AnomalyModel.load(path / "model"))


def run_features(registry: JobRegistry, runs_dir: Path, run_id: str) -> torch.Tensor:
    """The training features of a run (from its samples.csv), from the cache or extracted again."""
    model = run_model(registry, runs_dir, run_id)
    paths = tuple(row["path"] for row in read_samples(resolve_run(runs_dir, run_id)))
    key = feature_key(model.config.backbone, paths)
    return registry.cached(key, lambda: model.extract(list(paths)))

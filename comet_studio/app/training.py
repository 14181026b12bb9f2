"""Starting a training job from the app: the one function behind the Train tab, its API and the Inspect tab's
"retrain with these overrides" (a module of its own so that no tab imports another)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.config import ModelConfig, TrainConfig, config_to_dict
from ..core.data.folder import ScanStopped
from ..core.features.cache import StopRequested
from ..workflows.run import read_overrides, train_run, training_folder
from .context import AppContext
from .jobs import Job
from .paths import new_run_id, user_path
from .runs import feature_key, strategy_name

__all__ = ["start_training"]


def _carried_overrides(ctx: AppContext, run_id: str, user: str | None) -> dict[str, str]:
    return read_overrides(ctx.run_dir(run_id, user)) if run_id else {}


def _scan(ctx: AppContext, job: Job, path: Path):
    """The job's bounded scan; its Stop stops the scan too."""
    job.on_progress("scanning", 0, 0)
    try:
        with ctx.scan_bounds(None, lambda files: job.on_progress(f"scanning ({files:,} files so far)", 0, 0),
                             stop=job.stop) as bounds:
            return training_folder(path, bounds)
    except ScanStopped as stopped:
        raise StopRequested(str(stopped)) from stopped


def start_training(ctx: AppContext, folder: str, model_config: ModelConfig, train_config: TrainConfig, *,
                   overrides_from: str = "", user: str | None = None) -> Job:
    """Start a training job writing a new run folder owned by ``user``. ``folder`` must lie under one of
    the user's data roots. ``overrides_from`` names a run (of this user) whose overrides (force good /
    exclude) this run honours; those naming images not in ``folder`` are dropped and counted."""
    path = user_path(folder, roots=ctx.roots(user))
    carried = _carried_overrides(ctx, overrides_from, user)
    run_dir = ctx.runs_dir / new_run_id()
    ctx.claim(run_dir, user)

    def target(job: Job) -> dict[str, Any]:
        images = _scan(ctx, job, path)
        present = set(images.paths)
        overrides = {p: v for p, v in carried.items() if p in present}
        job.set_info(_paths=images.paths, n_images=len(images), n_skipped=len(images.skipped),
                     overrides=len(overrides), overrides_dropped=len(carried) - len(overrides),
                     rounds=train_config.rounds)
        key = feature_key(model_config.backbone, images.paths)
        result = train_run(images, run_dir, model_config, train_config, overrides=overrides,
                           callback=job.on_round, progress=job.on_progress, stop=job.stop,
                           features=ctx.registry.cache_get(key))
        ctx.registry.cache_put(key, result.model.features_)
        weights = run_dir / "model" / "model.safetensors"
        ctx.registry.cache_put(("model", str(run_dir), weights.stat().st_mtime_ns), result.model)
        return {"run_id": run_dir.name, "stopped": result.stopped, "timings": result.timings}

    strategy = strategy_name(config_to_dict(train_config.comet))
    label = f"{run_dir.name} · {strategy} · {model_config.detector} {model_config.backbone.image_size}px"
    return ctx.registry.start("train", label, target, run_dir=run_dir, owner=user)

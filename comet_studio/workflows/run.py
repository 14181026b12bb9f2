"""A training run as a folder: model, per-sample weights, history, skipped files, overrides.

``train_run`` is the one call behind ``comet-studio train`` and the app's Train button.

Run folder layout::

    model/model.safetensors, model/model.json   the trained head + post-processing (+ config)
    samples.csv      path, score, weight, rejected, override, validation   (one row per training image)
    history.json     per-round losses, lambda, threshold (written live, after every round)
    skipped.csv      files that could not be used, with the reason
    overrides.json   the user's per-sample overrides (path -> "good" | "exclude")
    distrusted.npz   with the memory's first opinion: per training image, the patches above its patch fence
    run.json         configs, data source, timings, device, whether training was stopped early
    trainer_state.safetensors   while unfinished: the trainer after its last completed round (``resume``)

The model and the trainer state are saved after every completed round (atomically), so a run that is
stopped or killed keeps its best model so far and continues with ``train_run(..., resume=True)``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..core.config import ModelConfig, TrainConfig, config_to_dict
from ..core.data.folder import UNBOUNDED, ImageFolder, ScanBounds, scan_folder
from ..core.data.mvtec import is_mvtec_category
from ..core.features import StopRequested, resolve_device
from ..core.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from ..core.io.trainer_state import STATE_FILE, read_trainer_state, write_trainer_state
from ..core.model import AnomalyModel
from ..core.progress import Progress
from ..core.training.state import TrainerState
from ..core.training import RoundEvent
from ..core.training.weighting import Override

__all__ = ["RunResult", "training_folder", "train_run", "read_samples", "read_overrides", "write_overrides",
           "read_distrusted"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    model: AnomalyModel
    folder: ImageFolder
    stopped: bool
    timings: dict[str, float]
    resumed_after: int | None = None  # the completed round a resumed run continued from


def training_folder(data_dir: str | Path, bounds: ScanBounds = UNBOUNDED) -> ImageFolder:
    """The training images of ``data_dir``: its ``train/`` folder for an MVTec AD category, else the whole
    folder (recursively), scanned within ``bounds`` (the app's are always set). Skipped files are listed in
    the result."""
    data_dir = Path(data_dir)
    root = data_dir / "train" if is_mvtec_category(data_dir) else data_dir
    return scan_folder(root, bounds=bounds)


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
    write_json_atomic(Path(run_dir) / "overrides.json", dict(sorted(overrides.items())))


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
    write_text_atomic(path, buffer.getvalue())


DISTRUSTED_FILE = "distrusted.npz"


def _write_distrusted(path: Path, model: AnomalyModel, train_config: TrainConfig) -> None:
    """The opinion's distrusted patches (above the patch fence, read from the kept images), as a boolean
    (N, h, w) map in samples.csv order: what the Inspect view outlines, whether or not they trained."""
    opinion = getattr(model, "opinion_", None)
    if opinion is None:
        path.unlink(missing_ok=True)
        return
    keep = ~opinion.excluded(train_config.trust)
    grid = tuple(opinion.patch_scores.shape[1:])
    mask = (opinion.patch_weights(train_config.trust, grid, keep=keep) == 0).numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, distrusted=mask)


def read_distrusted(run_dir: str | Path) -> np.ndarray | None:
    """(N, h, w) bool distrusted patches of a run's training images (samples.csv order), or None."""
    path = Path(run_dir) / DISTRUSTED_FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        return data["distrusted"].astype(bool)


def _write_skipped(path: Path, folder: ImageFolder) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows((s.path, s.reason) for s in folder.skipped)
    write_text_atomic(path, buffer.getvalue())


def _run_identity(model_config: ModelConfig, train_config: TrainConfig, folder: ImageFolder,
                  overrides: dict[str, Override]) -> dict:
    """What a resumed run must share with the interrupted one: configs, device type, images, overrides."""
    listing = "\n".join(folder.paths).encode("utf-8", "surrogateescape")
    return {"model": config_to_dict(model_config), "train": config_to_dict(train_config),
            "device": resolve_device(train_config.device).type,
            "images": {"count": len(folder), "sha256": hashlib.sha256(listing).hexdigest()},
            "overrides": dict(sorted(overrides.items()))}


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """'key (saved then, now now)' for every leaf that differs between two nested dicts."""
    found = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b, name = saved.get(key), now.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and name != "overrides":
            found += _differences(a, b, name + ".")
        elif a != b:
            found.append(f"{name} ({str(a)[:60]} then, {str(b)[:60]} now)")
    return found


def _resume_point(out: Path, identity: dict) -> TrainerState | None:
    """The trainer state to continue from, None when no round was completed; refuses a changed run."""
    if not (out / STATE_FILE).exists():
        if (out / "run.json").exists() and not json.loads((out / "run.json").read_text()).get("stopped"):
            raise ValueError(f"{out} finished all its rounds: nothing to resume (train into a new folder to "
                             f"train again)")
        logger.warning("no completed round saved in %s: training starts from the first round", out)
        return None
    state, saved = read_trainer_state(out / STATE_FILE)
    changed = _differences(saved, identity)
    if changed:
        raise ValueError(f"cannot resume {out}: the run was started with other settings or images: "
                         f"{'; '.join(changed[:4])}. Resume with the same folder and options, or train into a "
                         f"new run folder.")
    return state


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
    resume: bool = False,
) -> RunResult:
    """Scan ``data`` (a folder, an MVTec category, or an already scanned ImageFolder), train, and write the
    run folder. ``overrides`` (by path) default to those already saved in ``out_dir``. Returns even when
    stopped early: the best model so far is saved. The model and trainer state are saved after every
    round; ``resume=True`` continues a stopped or killed run in ``out_dir`` after its last completed round
    (it must have the same images, configs and overrides, else ``ValueError`` says what changed)."""
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    out = Path(out_dir)
    folder = data if isinstance(data, ImageFolder) else training_folder(data)
    out.mkdir(parents=True, exist_ok=True)  # after the scan: a folder that cannot train leaves no empty run behind
    _write_skipped(out / "skipped.csv", folder)
    overrides = read_overrides(out) if overrides is None else dict(overrides)
    unknown = sorted(set(overrides) - set(folder.paths))
    if unknown:
        raise ValueError(f"{len(unknown)} override(s) name images that are not in the folder, e.g. {unknown[0]}")
    identity = _run_identity(model_config, train_config, folder, overrides)
    resume_from = _resume_point(out, identity) if resume else None
    if not resume:  # an earlier run's state in this folder must never be resumed into this one
        (out / STATE_FILE).unlink(missing_ok=True)
    write_overrides(out, overrides)
    index = {p: i for i, p in enumerate(folder.paths)}
    by_index = {index[p]: v for p, v in overrides.items()}

    history: list[dict] = list(resume_from.history) if resume_from else []

    def on_round(event: RoundEvent) -> None:
        history.append(event.summary())
        write_json_atomic(out / "history.json", history)
        if callback is not None:
            callback(event)

    def on_state(state: TrainerState) -> None:  # model first: a kill between the two costs one round
        model.with_head(state.best_head, state.best_threshold, state.best_median).save(out / "model")
        write_trainer_state(out / STATE_FILE, state, identity)

    model = AnomalyModel(model_config, train=train_config)
    started = time.perf_counter()
    if features is None:
        features = model.extract(folder.paths, progress=progress, stop=stop)
    extract_seconds = time.perf_counter() - started
    model.fit(folder.paths, features=features, overrides=by_index, callback=on_round,
              progress=progress, stop=stop, resume=resume_from, on_state=on_state)
    train_seconds = time.perf_counter() - started - extract_seconds
    if model.result_.stopped and model.result_.best_round < 0:
        # Stopped inside the first round: the head never finished a round, so saving it would hand out an
        # untrained model (or overwrite a resumed run's trained one).
        raise StopRequested("stopped before the first training round finished; no model was saved")
    model.save(out / "model")
    _write_samples(out / "samples.csv", folder.paths, model.result_, overrides)
    _write_distrusted(out / DISTRUSTED_FILE, model, train_config)
    rounds = max(len(history) - (len(resume_from.history) if resume_from else 0), 1)  # run in this call
    timings = {"extract_seconds": extract_seconds, "extract_images_per_second": len(folder) / max(extract_seconds, 1e-9),
               "train_seconds": train_seconds, "seconds_per_round": train_seconds / rounds}
    write_json_atomic(out / "run.json", {
        "version": __version__, "data": folder.root, "n_images": len(folder), "n_skipped": len(folder.skipped),
        "device": str(model.device_), "stopped": model.result_.stopped, "best_round": model.result_.best_round,
        "threshold": model.result_.threshold, "n_rejected": int(np.sum(model.result_.rejected)),
        "timings": timings, "model": config_to_dict(model_config), "train": config_to_dict(train_config)})
    if not model.result_.stopped:  # finished: nothing left to resume
        (out / STATE_FILE).unlink(missing_ok=True)
    return RunResult(run_dir=out, model=model, folder=folder, stopped=model.result_.stopped, timings=timings,
                     resumed_after=resume_from.round if resume_from else None)

"""The trainer state file of a run (``trainer_state.safetensors``): tensors in safetensors, the rest as JSON
in its metadata. One file, written atomically, so a killed process leaves the previous round's state whole.
No pickle: loading a state file never runs code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..training.state import TrainerState
from ..training.weighting import SampleWeights
from .atomic import atomic_path

__all__ = ["STATE_FILE", "STATE_VERSION", "TrainerStateError", "write_trainer_state", "read_trainer_state"]

STATE_FILE = "trainer_state.safetensors"
STATE_VERSION = 1
_KEY = "comet_studio_trainer_state"


class TrainerStateError(ValueError):
    """A trainer state file that is truncated, of another version, or not one at all."""


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.contiguous() for k, v in tensors.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def write_trainer_state(path: str | Path, state: TrainerState, run: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` with ``run`` (JSON-ready: what the run was started with, compared when
    resuming) in its metadata."""
    tensors = {**_prefixed("head", state.head), **_prefixed("best_head", state.best_head),
               **_prefixed("anchor", {str(i): a for i, a in enumerate(state.anchor)}),
               **_prefixed("rng", state.rng),
               "weights": torch.from_numpy(np.ascontiguousarray(state.weights.weights, dtype=np.float64)),
               "rejected": torch.from_numpy(np.ascontiguousarray(state.weights.rejected, dtype=bool))}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state.optimiser.items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimiser.{index}.{name}"] = value.contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    meta = {"format_version": STATE_VERSION, "round": state.round, "n_samples": state.n_samples,
            "best_loss": state.best_loss, "best_round": state.best_round, "best_threshold": state.best_threshold,
            "best_median": state.best_median, "n_anchor": len(state.anchor), "optimiser_scalars": scalars,
            "l2_value": state.l2_value, "l2_history": state.l2_history, "threshold": state.weights.threshold,
            "median": state.weights.median, "history": state.history, "run": run}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_KEY: json.dumps(meta)})
    return path


def read_trainer_state(path: str | Path) -> tuple[TrainerState, dict[str, Any]]:
    """(state, run) from a file written by ``write_trainer_state``; ``TrainerStateError`` says why not."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            meta = json.loads((handle.metadata() or {})[_KEY])
    except (KeyError, json.JSONDecodeError) as error:
        raise TrainerStateError(f"{path} holds no trainer state: it was not written by comet-studio") from error
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise TrainerStateError(f"{path} cannot be read ({error}); delete it and train without --resume") \
            from error
    if meta.get("format_version") != STATE_VERSION:
        raise TrainerStateError(f"{path} has trainer-state version {meta.get('format_version')!r}; this "
                                f"comet-studio reads version {STATE_VERSION}: train without --resume")
    optimiser: dict[int, dict[str, Any]] = {}
    for key, value in _unprefixed("optimiser", tensors).items():
        index, name = key.split(".", 1)
        optimiser.setdefault(int(index), {})[name] = value
    for index, values in meta["optimiser_scalars"].items():
        optimiser.setdefault(int(index), {}).update(values)
    anchor = _unprefixed("anchor", tensors)
    weights = SampleWeights(tensors["weights"].numpy(), tensors["rejected"].numpy(), meta["threshold"],
                            meta["median"])
    state = TrainerState(
        round=meta["round"], n_samples=meta["n_samples"], head=_unprefixed("head", tensors),
        best_head=_unprefixed("best_head", tensors), best_loss=meta["best_loss"], best_round=meta["best_round"],
        best_threshold=meta["best_threshold"], best_median=meta["best_median"],
        anchor=[anchor[str(i)] for i in range(meta["n_anchor"])], optimiser=optimiser,
        l2_value=meta["l2_value"], l2_history=[tuple(p) for p in meta["l2_history"]], weights=weights,
        rng=_unprefixed("rng", tensors), history=meta["history"])
    return state, meta["run"]

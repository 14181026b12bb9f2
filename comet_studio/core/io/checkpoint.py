"""Checkpoints: safetensors for tensors + JSON for config. No pickle; written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["FORMAT_VERSION", "CheckpointError", "write_checkpoint", "read_checkpoint"]

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "model.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, from another version, or does not match its config."""


def write_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (temp files + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp_weights = directory / (WEIGHTS + ".tmp")
    save_file(flat, str(tmp_weights))
    tmp_config = directory / (CONFIG + ".tmp")
    tmp_config.write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2))
    os.replace(tmp_weights, directory / WEIGHTS)
    os.replace(tmp_config, directory / CONFIG)


def read_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    directory = Path(directory)
    if (directory / "model" / CONFIG).exists():  # a run folder
        directory = directory / "model"
    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    if not config_path.exists() or not weights_path.exists():
        raise CheckpointError(f"no model in {directory}: expected {CONFIG} and {WEIGHTS} "
                              f"(give a run folder or its model/ folder)")
    try:
        meta = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error})") from error
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{config_path} has format version {version!r}; this comet-studio reads version "
                              f"{FORMAT_VERSION}. Retrain, or use the comet-studio version that wrote it.")
    try:
        tensors = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights_path} cannot be read ({error})") from error
    return tensors, meta

"""Checkpoints: safetensors for tensors + JSON for config. No pickle; every file is written atomically.

Two layouts hold the same content:

- a folder (``model/`` of a run): ``model.safetensors`` + a readable ``model.json``;
- one file (``comet-studio export --format safetensors``): the tensors, with the same JSON in the
  safetensors header's metadata under the key ``comet_studio``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic import atomic_path

__all__ = ["FORMAT_VERSION", "CheckpointError", "write_checkpoint", "write_checkpoint_file", "read_checkpoint"]

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "model.json"
METADATA_KEY = "comet_studio"  # safetensors metadata key of the JSON config in a single-file checkpoint


class CheckpointError(ValueError):
    """A checkpoint that is missing, from another version, or does not match its config."""


def _flat(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}  # safetensors needs contiguous


def _stamped(meta: dict[str, Any]) -> dict[str, Any]:
    # Written in this version's format, whatever version the given config came from; the version goes first.
    return {"format_version": FORMAT_VERSION, **{k: v for k, v in meta.items() if k != "format_version"}}


def write_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``, each atomically (weights first,
    so a reader never finds a new config beside old weights)."""
    directory = Path(directory)
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(_flat(tensors), str(tmp))
    with atomic_path(directory / CONFIG) as tmp:
        tmp.write_text(json.dumps(_stamped(meta), indent=2))


def write_checkpoint_file(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write one ``.safetensors`` file holding the tensors and the JSON config (in its metadata)."""
    path = Path(path)
    config = json.dumps(_stamped(meta))
    with atomic_path(path) as tmp:
        save_file(_flat(tensors), str(tmp), metadata={METADATA_KEY: config})
    return path


def read_checkpoint(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) from a run folder, its ``model/`` folder, or a single exported ``.safetensors``
    file. Raises ``CheckpointError`` with the reason for anything that is not a readable checkpoint
    of this format version."""
    source = Path(source)
    if source.is_file():
        return _read_file(source)
    if (source / "model" / CONFIG).exists():  # a run folder
        source = source / "model"
    config_path, weights_path = source / CONFIG, source / WEIGHTS
    if not config_path.exists() or not weights_path.exists():
        raise CheckpointError(f"no model in {source}: expected {CONFIG} and {WEIGHTS} (give a run folder, "
                              f"its model/ folder, or an exported .safetensors file)")
    try:
        meta = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error})") from error
    _check_version(meta, config_path)
    tensors, _ = _load_safetensors(weights_path)
    return tensors, meta


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} cannot be read ({error}); it is truncated or not a safetensors "
                              f"file: restore it or retrain") from error


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} is not a model: give a run folder, its model/ folder, or an exported "
                              f".safetensors file (an .onnx file is for the ONNX predictor)")
    tensors, metadata = _load_safetensors(path)
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} has no {METADATA_KEY!r} config in its metadata: it was not written "
                              f"by comet-studio export")
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: the config in its metadata is not valid JSON ({error})") from error
    _check_version(meta, path)
    return tensors, meta


def _check_version(meta: Any, where: Path) -> None:
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where} has format version {version!r}; this comet-studio reads version "
                              f"{FORMAT_VERSION}. Retrain, or use the comet-studio version that wrote it.")

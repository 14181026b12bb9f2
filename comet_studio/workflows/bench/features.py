"""Frozen-backbone features for a whole category, extracted once and cached on disk for every cell.

The backbone never trains, so one extraction of the original training images plus the test images covers
every contaminated training set (they are the original train + some test anomalies) and every test set.
The cache is a ``torch.save`` dict of plain types and one tensor, read back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ...core.config import BackboneConfig, ModelConfig, TrainConfig, config_to_dict
from ...core.io.atomic import atomic_path
from ...core.model import AnomalyModel
from ...core.progress import Progress

__all__ = ["FeatureStore", "load_or_extract", "cache_path"]


class FeatureStore:
    """Features of a set of images, looked up by path."""

    def __init__(self, paths: Sequence[str], features: torch.Tensor) -> None:
        if len(paths) != len(features):
            raise ValueError(f"{len(paths)} paths but features for {len(features)} images")
        self.paths = list(paths)
        self.features = features
        self._index = {p: i for i, p in enumerate(self.paths)}

    def __contains__(self, path: str) -> bool:
        return path in self._index

    def take(self, paths: Sequence[str]) -> torch.Tensor:
        """Features of ``paths`` in that order (a copy)."""
        missing = [p for p in paths if p not in self._index]
        if missing:
            raise KeyError(f"{len(missing)} image(s) have no cached features, e.g. {missing[0]}")
        return self.features[torch.as_tensor([self._index[p] for p in paths], dtype=torch.long)]


def cache_path(cache_dir: Path, category: str, backbone: BackboneConfig) -> Path:
    """One file per (category, backbone settings); the hash covers layers, patch size and feature dim."""
    digest = hashlib.sha1(json.dumps(config_to_dict(backbone), sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{category}-{backbone.name}-{backbone.image_size}px-{digest}.pt"


def _read(path: Path, backbone: BackboneConfig) -> FeatureStore | None:
    if not path.exists():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        stored = data["backbone"]
        store = FeatureStore(data["paths"], data["features"])
    except Exception as error:  # any unreadable cache is the same problem for the user
        raise RuntimeError(f"feature cache {path} cannot be read ({error}); delete it to re-extract") from error
    if stored != config_to_dict(backbone):
        raise RuntimeError(f"feature cache {path} was written for backbone settings {stored}, not "
                           f"{config_to_dict(backbone)}; delete it to re-extract")
    return store


def _write(path: Path, store: FeatureStore, backbone: BackboneConfig) -> None:
    with atomic_path(path) as tmp:  # an interrupted bench never leaves half a cache
        torch.save({"backbone": config_to_dict(backbone), "paths": store.paths, "features": store.features}, tmp)


def load_or_extract(cache_dir: str | Path, category: str, paths: Sequence[str], backbone: BackboneConfig, *,
                    device: str = "auto", progress: Progress | None = None) -> tuple[FeatureStore, int]:
    """Features for ``paths`` from the cache, extracting (and caching) only the images it lacks.
    Returns the store and how many images were extracted now."""
    path = cache_path(Path(cache_dir), category, backbone)
    store = _read(path, backbone)
    missing = [p for p in dict.fromkeys(paths) if store is None or p not in store]
    if not missing:
        return store, 0
    extractor = AnomalyModel(ModelConfig(backbone=backbone), train=TrainConfig(device=device))
    fresh = extractor.extract(missing, progress=progress)
    if store is None:
        store = FeatureStore(missing, fresh)
    else:
        store = FeatureStore(store.paths + missing, torch.cat([store.features, fresh]))
    _write(path, store, backbone)
    return store, len(missing)

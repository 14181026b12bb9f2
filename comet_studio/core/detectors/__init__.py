"""Detector heads on cached patch features; each exposes per-sample losses and patch scores."""

from .anomaly_map import AnomalyMap
from .base import DetectorHead, top_k_mean
from .registry import REGISTRY, DetectorSpec, detector_names, detector_spec
from .simplenet import SimpleNetHead

__all__ = ["AnomalyMap", "DetectorHead", "top_k_mean", "SimpleNetHead", "build_head", "REGISTRY", "DetectorSpec",
           "detector_names", "detector_spec"]


def build_head(config, dim: int, grid: tuple[int, int], *, generator=None) -> DetectorHead:
    """The detector head named by ``config.detector`` (a ModelConfig) for features of ``dim`` channels, its
    initial state drawn from ``generator`` (a ``torch.Generator``; seed 0 when None)."""
    return detector_spec(config.detector).build(config, dim, generator=generator)

"""Detector heads on cached patch features; each exposes per-sample losses and patch scores."""

from .anomaly_map import AnomalyMap
from .base import DetectorHead, top_k_mean
from .simplenet import SimpleNetHead

__all__ = ["AnomalyMap", "DetectorHead", "top_k_mean", "SimpleNetHead", "build_head"]


def build_head(config, dim: int, grid: tuple[int, int]) -> DetectorHead:
    """The detector head named by ``config.detector`` (a ModelConfig) for features of ``dim`` channels."""
    if config.detector == "simplenet":
        return SimpleNetHead(dim, config.simplenet)
    if config.detector == "flow":
        from .flow import FlowHead
        return FlowHead(dim, config.flow)
    if config.detector == "memory":
        from .memory import MemoryHead
        return MemoryHead(dim, config.memory)
    if config.detector == "patchcore":
        from .patchcore import PatchCoreHead
        return PatchCoreHead(dim, config.patchcore)
    raise ValueError(f"unknown detector {config.detector!r}")

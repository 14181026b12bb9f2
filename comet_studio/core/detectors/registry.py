"""Every detector, one entry each: its name, its settings class, its head class and what it supports.

Adding a detector = its module in this folder + one ``DetectorSpec`` below (+ its name in
``config.DETECTORS`` and a settings field on ``ModelConfig``, which a test checks against this table).
``build_head``, config validation, the CLI's ``--model`` choices, the app's dropdown and the bench's
``MODELS`` all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

import torch

from ..config import FlowConfig, MemoryConfig, PatchCoreConfig, SimpleNetConfig
from .base import DetectorHead

if TYPE_CHECKING:
    from ..config import ModelConfig

__all__ = ["DetectorSpec", "REGISTRY", "detector_spec", "detector_names"]


@dataclass(frozen=True)
class DetectorSpec:
    """One detector. Its settings live in ``ModelConfig.<name>`` (an instance of ``config_class``)."""

    name: str
    config_class: type
    head: str  # "module:Class" in this package, imported when first used (some heads need extra packages)
    summary: str
    exports: tuple[str, ...] = ("onnx", "torchscript", "safetensors")  # core/io/export.py formats

    def head_class(self) -> type[DetectorHead]:
        module, _, name = self.head.partition(":")
        return getattr(import_module(f"{__package__}.{module}"), name)

    @property
    def trains(self) -> bool:
        """Gradient training (False: fitted by one pass over the features); the head class says."""
        return bool(self.head_class().trainable)

    def build(self, config: ModelConfig, dim: int, *, generator: torch.Generator | None = None) -> DetectorHead:
        """The head; its random initial state (weights, memory samples) is drawn from ``generator``."""
        return self.head_class()(dim, getattr(config, self.name), generator=generator)


REGISTRY: dict[str, DetectorSpec] = {spec.name: spec for spec in (
    DetectorSpec("simplenet", SimpleNetConfig, "simplenet:SimpleNetHead",
                 "adaptor + discriminator trained against Gaussian-noised features"),
    DetectorSpec("flow", FlowConfig, "flow:FlowHead", "normalising flow; score = per-patch negative log-likelihood"),
    DetectorSpec("memory", MemoryConfig, "memory:MemoryHead", "ensemble of sparse random patch memories"),
    DetectorSpec("patchcore", PatchCoreConfig, "patchcore:PatchCoreHead", "PatchCore coreset memory"),
)}


def detector_spec(name: str) -> DetectorSpec:
    """The entry of detector ``name``; a ValueError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown detector {name!r}; choose from {list(REGISTRY)}")
    return REGISTRY[name]


def detector_names(*, trains: bool | None = None) -> tuple[str, ...]:
    """Every detector's name (``trains=False``: the training-free ones only; ``True``: the trained ones)."""
    return tuple(name for name, spec in REGISTRY.items() if trains is None or spec.trains == trains)

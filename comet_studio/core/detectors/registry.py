"""Every detector, one entry each: its name, its settings class, its head class and what it supports.

Adding a detector = its module in this folder (a settings dataclass and a ``DetectorHead``) + one
``DetectorSpec`` below. Everything else reads this table: ``ModelConfig`` gets a settings section named after
each entry (``ModelConfig.<name>``, saved in the model's JSON under that name), config validation checks
``ModelConfig.detector`` against it, and ``build_head``, the CLI's ``--model`` choices, the app's dropdown and
the bench's ``MODELS`` list it. This module imports only the detector modules (never ``core.config``), so the
config can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .base import DetectorHead
from .flow import FlowConfig, FlowHead
from .memory import MemoryConfig, MemoryHead
from .patchcore import PatchCoreConfig, PatchCoreHead
from .simplenet import SimpleNetConfig, SimpleNetHead

if TYPE_CHECKING:
    from ..config import ModelConfig

__all__ = ["DetectorSpec", "REGISTRY", "DEFAULT_DETECTOR", "detector_spec", "detector_names"]


@dataclass(frozen=True)
class DetectorSpec:
    """One detector. Its settings live in ``ModelConfig.<name>`` (an instance of ``config_class``)."""

    name: str
    config_class: type
    head_class: type[DetectorHead]
    summary: str
    exports: tuple[str, ...] = ("onnx", "torchscript", "safetensors")  # core/io/export.py formats
    # The features' edge handling it gets unless the config names one (BackboneConfig.pool_padding): chosen
    # leave-one-set-out per detector (README, "Edge patches"). Changing it changes new models only: a saved
    # model holds the value it was trained with.
    pool_padding: str = "inside"

    @property
    def trains(self) -> bool:
        """Gradient training (False: fitted by one pass over the features); the head class says."""
        return bool(self.head_class.trainable)

    def build(self, config: ModelConfig, dim: int, *, generator: torch.Generator | None = None) -> DetectorHead:
        """The head; its random initial state (weights, memory samples) is drawn from ``generator``."""
        return self.head_class(dim, getattr(config, self.name), generator=generator)


REGISTRY: dict[str, DetectorSpec] = {spec.name: spec for spec in (
    DetectorSpec("simplenet", SimpleNetConfig, SimpleNetHead,
                 "adaptor + discriminator trained against Gaussian-noised features"),
    DetectorSpec("flow", FlowConfig, FlowHead, "normalising flow; score = per-patch negative log-likelihood"),
    DetectorSpec("memory", MemoryConfig, MemoryHead, "ensemble of sparse random patch memories",
                 pool_padding="zeros"),
    DetectorSpec("patchcore", PatchCoreConfig, PatchCoreHead, "PatchCore coreset memory", pool_padding="zeros"),
)}
# Chosen leave one data set out on the three development sets (README, "The default detector"): the memory
# ensemble behind the trust gate is the strongest row on cookies and ELPV and within seed noise of SimpleNet +
# trust on magnetic tile; the trained heads stay one --model away.
DEFAULT_DETECTOR = "memory"


def detector_spec(name: str) -> DetectorSpec:
    """The entry of detector ``name``; a ValueError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown detector {name!r}; choose from {list(REGISTRY)}")
    return REGISTRY[name]


def detector_names(*, trains: bool | None = None) -> tuple[str, ...]:
    """Every detector's name (``trains=False``: the training-free ones only; ``True``: the trained ones)."""
    return tuple(name for name, spec in REGISTRY.items() if trains is None or spec.trains == trains)

"""The algorithm: data -> features -> detectors -> training -> evaluation -> io, and ``AnomalyModel`` over them.
Imports nothing of the layers above it (engines, workflows, viz, cli, app)."""

from .config import (BackboneConfig, CoMetConfig, FlowConfig, MemoryConfig, ModelConfig, SimpleNetConfig,
                     TrainConfig)
from .model import AnomalyModel, NotFittedError, Prediction

__all__ = ["BackboneConfig", "CoMetConfig", "FlowConfig", "MemoryConfig", "ModelConfig", "SimpleNetConfig",
           "TrainConfig", "AnomalyModel", "NotFittedError", "Prediction"]

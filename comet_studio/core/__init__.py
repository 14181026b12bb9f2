"""The algorithm: data -> features -> detector head -> CoMet trainer -> outputs. Knows nothing of any UI."""

from .config import (BackboneConfig, CoMetConfig, FlowConfig, MemoryConfig, ModelConfig, SimpleNetConfig,
                     TrainConfig)
from .model import AnomalyModel, NotFittedError, Prediction

__all__ = ["BackboneConfig", "CoMetConfig", "FlowConfig", "MemoryConfig", "ModelConfig", "SimpleNetConfig",
           "TrainConfig", "AnomalyModel", "NotFittedError", "Prediction"]

"""CoMet Studio: trustworthy anomaly detectors from uncurated image folders.

The algorithm lives in ``comet_studio.core`` (no UI imports); ``comet_studio.cli`` and ``comet_studio.app``
are thin shells over it.
"""

from ._version import __version__
from .core import (
    AnomalyModel,
    BackboneConfig,
    CoMetConfig,
    FlowConfig,
    MemoryConfig,
    ModelConfig,
    Prediction,
    SimpleNetConfig,
    TrainConfig,
)

__all__ = ["__version__", "AnomalyModel", "BackboneConfig", "CoMetConfig", "FlowConfig", "MemoryConfig",
           "ModelConfig", "Prediction", "SimpleNetConfig", "TrainConfig"]

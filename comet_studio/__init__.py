"""CoMet Studio: trustworthy anomaly detectors from uncurated image folders.

Layers (``tests/unit/test_architecture.py`` keeps them apart): ``comet_studio.core`` is the algorithm (data ->
features -> detectors -> training -> evaluation -> io); ``comet_studio.engines`` runs jobs here or on Ray and
``comet_studio.viz`` draws charts and overlays from plain data, neither importing core; ``comet_studio.workflows``
(run folders, train-all, the bench, batch prediction) sits above all three; ``comet_studio.cli`` and
``comet_studio.app`` are thin shells on top.
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

"""CoMet training: confidence weights, meta-learning, adaptive L2, and the trainer that joins them."""

from .control import TrainingControl
from .meta import MetaLearner
from .regularization import AdaptiveL2
from .result import FitResult, RoundEvent
from .scoring import score_features
from .trainer import CoMetTrainer
from .weighting import SampleWeights, confidence_weights, iqr_threshold

__all__ = ["MetaLearner", "AdaptiveL2", "CoMetTrainer", "TrainingControl", "FitResult", "RoundEvent",
           "score_features", "SampleWeights", "confidence_weights", "iqr_threshold"]

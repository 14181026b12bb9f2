"""CoMet training: confidence weights, meta-learning, adaptive L2, and the trainer that joins them."""

from .meta import MetaLearner
from .regularization import AdaptiveL2
from .trainer import CoMetTrainer, FitResult, RoundEvent, score_features
from .weighting import SampleWeights, confidence_weights, iqr_threshold

__all__ = ["MetaLearner", "AdaptiveL2", "CoMetTrainer", "FitResult", "RoundEvent", "score_features",
           "SampleWeights", "confidence_weights", "iqr_threshold"]

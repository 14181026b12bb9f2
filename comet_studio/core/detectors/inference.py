"""The whole inference path as one nn.Module: features -> head -> heatmap -> normalised scores and label."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .anomaly_map import AnomalyMap
from .base import DetectorHead, top_k_mean
from ..features.extractor import FeatureExtractor
from .postprocess import PostProcessor

__all__ = ["Scores", "InferenceModel"]


class Scores(NamedTuple):
    """Outputs of a model, one tensor each: higher = more anomalous. ``image_score`` and ``anomaly_map``
    are normalised so that the decision threshold is 0.5; ``raw_score`` is the head's own scale."""

    image_score: torch.Tensor  # (B,)
    pred_label: torch.Tensor  # (B,) bool
    anomaly_map: torch.Tensor  # (B, S, S)
    raw_score: torch.Tensor  # (B,)


class InferenceModel(nn.Module):
    """Images (B, 3, S, S) in [0, 1] -> ``Scores``. The same module serves predict and export."""

    def __init__(self, extractor: FeatureExtractor, head: DetectorHead, post: PostProcessor, blur_sigma: float):
        super().__init__()
        self.extractor = extractor
        self.head = head
        self.post = post
        size = extractor.config.image_size
        self.anomaly_map = AnomalyMap((size, size), blur_sigma)

    def scores_from_features(self, features: torch.Tensor) -> Scores:
        patch = self.head.patch_scores(features)
        raw = top_k_mean(patch, self.head.top_k)
        normalised = self.post(raw)
        return Scores(normalised, normalised > 0.5, self.post(self.anomaly_map(patch)), raw)

    def forward(self, images: torch.Tensor) -> Scores:
        return self.scores_from_features(self.extractor(images))

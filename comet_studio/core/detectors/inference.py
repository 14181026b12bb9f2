"""The whole inference path as one nn.Module: features -> head -> heatmap -> normalised scores and label."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .anomaly_map import AnomalyMap
from .base import DetectorHead, top_k_mean
from ..data.views import align_view, apply_view
from ..features.extractor import FeatureExtractor
from .postprocess import PostProcessor

__all__ = ["Scores", "InferenceModel", "mean_of_views"]


class Scores(NamedTuple):
    """Outputs of a model, one tensor each: higher = more anomalous. ``image_score`` and ``anomaly_map``
    are normalised so that the decision threshold is 0.5; ``raw_score`` is the head's own scale."""

    image_score: torch.Tensor  # (B,)
    pred_label: torch.Tensor  # (B,) bool
    anomaly_map: torch.Tensor  # (B, S, S)
    raw_score: torch.Tensor  # (B,)


def mean_of_views(patch_maps: list[torch.Tensor], views: tuple[str, ...]) -> torch.Tensor:
    """(B, h, w) mean of the patch maps of the image itself and of each test-time view, each moved back
    onto the image first. ``patch_maps[0]`` is the image as it is, then one per name in ``views``."""
    total = patch_maps[0]
    for patch, name in zip(patch_maps[1:], views):
        total = total + align_view(patch, name)
    return total / len(patch_maps)


class InferenceModel(nn.Module):
    """Images (B, 3, S, S) in [0, 1] -> ``Scores``. The same module serves predict and export.

    With test-time ``views`` every image is scored as it is and through each view in one batch, and the
    aligned patch maps are averaged before the image score and heatmap are read from them."""

    def __init__(self, extractor: FeatureExtractor, head: DetectorHead, post: PostProcessor, blur_sigma: float,
                 views: tuple[str, ...] = ()):
        super().__init__()
        self.extractor = extractor
        self.head = head
        self.post = post
        self.views = tuple(views)
        size = extractor.config.image_size
        self.anomaly_map = AnomalyMap((size, size), blur_sigma)

    def scores_from_patches(self, patch: torch.Tensor) -> Scores:
        """Scores from (B, h, w) patch scores (already averaged over the views)."""
        raw = top_k_mean(patch, self.head.top_k)
        normalised = self.post(raw)
        return Scores(normalised, normalised > 0.5, self.post(self.anomaly_map(patch)), raw)

    def scores_from_features(self, features: torch.Tensor) -> Scores:
        """Scores of the images as they are, from their features (no test-time views)."""
        return self.scores_from_patches(self.head.patch_scores(features))

    def forward(self, images: torch.Tensor) -> Scores:
        if not self.views:
            return self.scores_from_features(self.extractor(images))
        seen = torch.cat([images] + [apply_view(images, name) for name in self.views])
        patch = self.head.patch_scores(self.extractor(seen))
        # reshape, not chunk: an exported graph keeps the batch size symbolic through it.
        by_view = patch.reshape(len(self.views) + 1, -1, *patch.shape[1:])
        return self.scores_from_patches(mean_of_views([by_view[i] for i in range(len(self.views) + 1)], self.views))

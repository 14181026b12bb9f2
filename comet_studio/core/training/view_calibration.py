"""The decision threshold of a model scored through test-time views, set from its training images.

A test image's score under views is read from the mean of its aligned patch maps, a steadier and often
larger number than its plain score (a rotated part can look less usual than the part). The threshold the
trainer set from plain scores would then flag good parts, so the training images are scored the same way
(every view, the same mean) and Tukey's fence is read again from those scores: training data only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from ..detectors.base import DetectorHead, top_k_mean
from ..detectors.inference import mean_of_views
from .weighting import iqr_threshold

__all__ = ["view_threshold"]


@torch.no_grad()
def view_threshold(head: DetectorHead, view_features: Iterable[torch.Tensor], views: tuple[str, ...],
                   members: np.ndarray, *, k: float, device: torch.device, fit_features: torch.Tensor | None = None,
                   batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> tuple[float, float]:
    """(threshold, median) of the ``members`` training images scored through ``views``.

    ``view_features`` yields the training images' features as they are, then through each view (one
    tensor at a time, so only one view's features are held). ``members`` (N,) bool: the images the model
    trusts (not rejected, weight > 0). A trained head scores them as they are; a training-free head (a
    patch memory) is refitted on them (on ``fit_features``, the features it was trained on, when they hold
    more than the images as they are: training views side by side) and scores each leave-one-out, the way
    its training scores are read.
    """
    members = np.asarray(members, dtype=bool)
    if members.sum() < 2:
        raise ValueError(f"need at least 2 trusted training images to set the threshold, got {members.sum()}")
    chosen = torch.as_tensor(np.flatnonzero(members))
    maps: list[torch.Tensor] = []
    for index, features in enumerate(view_features):
        features = features[chosen]
        if head.trainable:
            head.eval()
            maps.append(torch.cat([head.patch_scores(features[i:i + batch_size].to(device).float()).cpu()
                                   for i in range(0, len(features), batch_size)]))
        else:
            if index == 0:  # the memory holds exactly the trusted images, so leave-one-out is by position
                fitted = features if fit_features is None else fit_features[chosen]
                head.fit_statistics(fitted.to(device))
            maps.append(head.training_patch_scores(features).cpu())
        if progress is not None:
            progress(index + 1, len(views) + 1)
    scores = top_k_mean(mean_of_views(maps, views), head.top_k).numpy().astype(np.float64)
    return iqr_threshold(scores, k)

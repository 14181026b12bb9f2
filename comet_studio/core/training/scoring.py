"""Image scores of cached features under the current head, batched on the training device."""

from __future__ import annotations

import numpy as np
import torch

from ..detectors.base import DetectorHead

__all__ = ["score_features"]


@torch.no_grad()
def score_features(head: DetectorHead, features: torch.Tensor, device: torch.device,
                   batch_size: int = 32) -> np.ndarray:
    """Image scores for cached features, batched on ``device``."""
    head.eval()
    out = [head.image_scores(features[i:i + batch_size].to(device).float()).cpu()
           for i in range(0, len(features), batch_size)]
    head.train()
    return torch.cat(out).numpy().astype(np.float64)

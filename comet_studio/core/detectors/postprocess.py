"""Fitted post-processing that travels with the weights: score normalisation and the label threshold."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PostProcessor"]


class PostProcessor(nn.Module):
    """Maps raw scores s to (s - median) / (threshold - median) * 0.5: the training median goes to 0 and the
    decision threshold to 0.5, for image scores and heatmaps alike. Buffers, so they live in the checkpoint
    and in an exported graph."""

    def __init__(self, threshold: float = 1.0, median: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("median", torch.tensor(float(median)))

    def set(self, threshold: float, median: float) -> None:
        if not threshold > median:
            threshold = median + 1e-6  # degenerate (constant) scores: any increase is anomalous
        self.threshold.fill_(float(threshold))
        self.median.fill_(float(median))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.median) / (self.threshold - self.median) * 0.5

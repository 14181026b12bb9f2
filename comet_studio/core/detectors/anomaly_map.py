"""Patch scores -> pixel heatmap at input resolution (bilinear upsampling + fixed Gaussian blur)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AnomalyMap"]


class AnomalyMap(nn.Module):
    """(B, h, w) patch scores -> (B, H, W) smoothed map. The blur is a conv with a fixed kernel buffer, so
    the module exports to ONNX unchanged."""

    def __init__(self, output_size: tuple[int, int], sigma: float = 4.0) -> None:
        super().__init__()
        self.output_size = tuple(output_size)
        self.sigma = float(sigma)
        radius = max(1, int(math.ceil(4 * sigma))) if sigma > 0 else 0
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x**2) / (2 * sigma**2)) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", (kernel / kernel.sum()).view(1, 1, 1, -1), persistent=False)
        self.radius = radius

    def forward(self, patch_scores: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(patch_scores.unsqueeze(1).float(), size=self.output_size, mode="bilinear",
                          align_corners=False)
        if self.radius > 0:
            # Separable blur with reflect padding: no dark rim at the borders.
            x = F.conv2d(F.pad(x, (self.radius, self.radius, 0, 0), mode="reflect"), self.kernel)
            x = F.conv2d(F.pad(x, (0, 0, self.radius, self.radius), mode="reflect"), self.kernel.transpose(2, 3))
        return x.squeeze(1)

"""Patch features: backbone layers -> local 3x3 neighbourhood average -> one grid -> fixed dimension."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BackboneConfig
from .backbones import build_backbone

__all__ = ["FeatureExtractor", "CPU_PIXELS_PER_PASS"]

# On a CPU the backbone is fastest on small batches: measured on 2 cores, Lite0 at 256 px ran 91 img/s one image
# at a time against 31 img/s at batch 16 (its early activations of a big batch leave the caches), Lite2 40-51
# against 20, and at 128 px two images a pass were best. So a CPU batch runs in passes of this many pixels
# (at least one image); the GPU and exported graphs take the batch whole.
CPU_PIXELS_PER_PASS = 2 * 128 * 128


class FeatureExtractor(nn.Module):
    """Frozen: maps an image batch in [0, 1] (B, 3, S, S) to patch features (B, D, h, w).

    Each layer is averaged over its ``patch_size`` neighbourhood (SimpleNet/PatchCore's local aggregation),
    upsampled to the finest layer's grid, reduced over channels by adaptive average pooling to at most
    ``feature_dim // n_layers`` channels (so every layer counts equally), and concatenated.
    ``out_dim`` and ``grid`` come from a dry run when built.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.name)
        self.layers = config.layers or self.backbone.default_layers
        unknown = [name for name in self.layers if name not in self.backbone.layer_names]
        if unknown:
            raise ValueError(f"unknown layers {unknown} for {config.name}; choose from "
                             f"{list(self.backbone.layer_names)}")
        self.register_buffer("mean", torch.tensor(self.backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.backbone.std).view(1, 3, 1, 1), persistent=False)
        self.per_layer_dim = max(1, config.feature_dim // len(self.layers))
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, config.image_size, config.image_size))
        self.out_dim = int(probe.shape[1])
        self.grid = (int(probe.shape[2]), int(probe.shape[3]))
        self.eval()

    def train(self, mode: bool = True) -> "FeatureExtractor":
        # Always frozen: batch-norm statistics must never move.
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The export check first: an exported graph's batch is symbolic and must not be compared.
        if torch.jit.is_tracing() or torch.compiler.is_exporting() or images.device.type != "cpu":
            return self._features(images)
        per_pass = max(1, CPU_PIXELS_PER_PASS // (images.shape[-2] * images.shape[-1]))
        if images.shape[0] <= per_pass:
            return self._features(images)
        return torch.cat([self._features(chunk) for chunk in images.split(per_pass)])

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        maps = self.backbone(x, self.layers)
        size = maps[0].shape[-2:]
        for m in maps[1:]:
            if m.shape[-1] > size[-1]:
                size = m.shape[-2:]
        parts = []
        pad = self.config.patch_size // 2
        for m in maps:
            if self.config.patch_size > 1:
                m = F.avg_pool2d(m, self.config.patch_size, stride=1, padding=pad,
                                 count_include_pad=self.config.pool_padding == "zeros")  # None: inside
            if m.shape[-2:] != size:
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            if m.shape[1] > self.per_layer_dim:
                b, c, h, w = m.shape
                flat = m.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
                m = F.adaptive_avg_pool1d(flat, self.per_layer_dim).reshape(b, h, w, -1).permute(0, 3, 1, 2)
            parts.append(m)
        return torch.cat(parts, dim=1).contiguous()

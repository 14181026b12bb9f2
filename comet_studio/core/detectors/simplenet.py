"""SimpleNet-style head: feature adaptor + discriminator trained against Gaussian-noised features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check, check_at_least, check_range
from .base import DetectorHead
from .seeded import generator_or_default, seeded_linear

__all__ = ["SimpleNetConfig", "SimpleNetHead"]


@dataclass(frozen=True, kw_only=True)
class SimpleNetConfig:
    """Feature adaptor + discriminator trained against Gaussian-noised features.

    ``noise_std`` is in units of the training features' per-channel standard deviation: features are
    standardised before the adaptor, so the noise scales with the features' spread whatever the backbone.
    A wide noise (1.0) makes the discriminator learn where patches are common rather than draw a tight
    boundary around every training patch, so a rare (defective) training patch is not memorised as normal.
    ``train_patches``: a random subset of each image's patches per training step (0 = all): 4x less work at
    256 px with the same expected gradient.
    """

    hidden_dim: int = 1024
    noise_std: float = 1.0
    margin: float = 0.5
    learning_rate: float = 2e-4
    top_k: float = 0.01
    train_patches: int = 256

    def __post_init__(self) -> None:
        check_at_least(self, hidden_dim=8)
        check(self.train_patches >= 0, f"train_patches must be >= 0 (0 = all), got {self.train_patches!r}")
        check(self.noise_std > 0, f"noise_std must be > 0, got {self.noise_std!r}")
        check_at_least(self, margin=0)
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate!r}")
        check_range("top_k", self.top_k, 0.0, 1.0)



class SimpleNetHead(DetectorHead):
    """Patch features are standardised with the training set's per-channel mean and std (buffers), adapted
    by a linear layer (initialised to the identity) and scored by an MLP discriminator.

    Training: real adapted patches should score above ``margin``, the same patches plus N(0, noise_std^2)
    noise below ``-margin`` (hinge loss). Because the noise lives in standardised units it scales with the
    features' spread: a fixed 0.015 (SimpleNet's value for its own features) is far too small for
    EfficientNet block outputs (std 3-6), and the head then memorises every training patch.
    Patch anomaly score = -discriminator(adaptor(x)).
    The discriminator's initial weights are drawn from ``generator`` (seed 0 when None).
    """

    def __init__(self, dim: int, config: SimpleNetConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        self.top_k = config.top_k
        generator = generator_or_default(generator)
        # The adaptor's default draws are made and then replaced, so the discriminator's draws stay those
        # of earlier versions (fits with the same seed give the same weights as before).
        self.adaptor = seeded_linear(dim, dim, generator)
        with torch.no_grad():
            self.adaptor.weight.copy_(torch.eye(dim))
            self.adaptor.bias.zero_()
        self.discriminator = nn.Sequential(
            seeded_linear(dim, config.hidden_dim, generator), nn.LeakyReLU(0.2),
            seeded_linear(config.hidden_dim, 1, generator))
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))

    def fit_statistics(self, features: torch.Tensor) -> None:
        patches = features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        self.feature_mean.copy_(patches.mean(0))
        self.feature_std.copy_(patches.std(0).clamp_min(1e-6))

    def _adapted(self, features: torch.Tensor) -> torch.Tensor:
        patches = features.float().permute(0, 2, 3, 1)  # (B, h, w, D)
        return self.adaptor((patches - self.feature_mean) / self.feature_std)

    def per_sample_loss(self, features: torch.Tensor, generator: torch.Generator | None = None,
                        patch_weights: torch.Tensor | None = None) -> torch.Tensor:
        adapted = self._adapted(features).flatten(1, 2)  # (B, P, D)
        weights = None if patch_weights is None else patch_weights.to(adapted).flatten(1)  # (B, P)
        keep = self.config.train_patches
        if self.training and 0 < keep < adapted.shape[1]:
            pick = torch.randperm(adapted.shape[1], generator=generator, device=adapted.device)[:keep]
            adapted = adapted[:, pick]
            weights = None if weights is None else weights[:, pick]
        noise = torch.randn(adapted.shape, generator=generator, device=adapted.device) * self.config.noise_std
        true_scores = self.discriminator(adapted).squeeze(-1)
        fake_scores = self.discriminator(adapted + noise).squeeze(-1)
        margin = self.config.margin
        loss = F.relu(margin - true_scores) + F.relu(margin + fake_scores)
        # A weight-0 patch (a distrusted one) teaches nothing; the mean keeps the image's share fixed.
        return loss.mean(dim=1) if weights is None else (loss * weights).mean(dim=1)

    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        return -self.discriminator(self._adapted(features)).squeeze(-1)

"""Adaptive L2: lambda(Sigma) grows when the train and validation losses of recent steps fluctuate."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

__all__ = ["AdaptiveL2", "l2_to_anchor"]


class AdaptiveL2:
    """lambda = l2_base * (1 + l2_gamma * normalised det(Sigma)), capped at l2_max_factor * l2_base.

    Sigma is the 2x2 covariance of the last ``window`` (train, validation) loss pairs, each divided by its
    window mean so that the value does not depend on the loss's scale; the normalised det is
    det(Sigma) ** (1/4), the geometric mean of the two relative standard deviations times (1 - rho^2) ** (1/4)
    (0.05 = the losses fluctuate by about 5 % independently of each other). It is large when the two losses
    move independently (the model fits the batch it sees but not the held-out one) and zero when they move
    together or stay flat. ``enabled=False`` gives a fixed l2_base.
    """

    def __init__(self, base: float, gamma: float, window: int, max_factor: float, enabled: bool = True) -> None:
        self.base, self.gamma, self.max_factor, self.enabled = base, gamma, max_factor, enabled
        self.history: deque[tuple[float, float]] = deque(maxlen=window)
        self.value = base

    def normalised_det(self) -> float:
        if len(self.history) < 3:
            return 0.0
        losses = np.asarray(self.history, dtype=np.float64)
        relative = losses / np.maximum(np.abs(losses.mean(axis=0)), 1e-12)
        det = float(np.linalg.det(np.cov(relative, rowvar=False)))
        return float(max(det, 0.0) ** 0.25)

    def update(self, train_loss: float, val_loss: float) -> float:
        self.history.append((float(train_loss), float(val_loss)))
        if self.enabled:
            factor = min(1.0 + self.gamma * self.normalised_det(), self.max_factor)
            self.value = self.base * factor
        return self.value


def l2_to_anchor(params: list[torch.Tensor], anchor: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared distances to the initial parameters (L2-SP). Decay towards zero would pull the
    identity-initialised adaptor away from the pretrained feature space; decay to the start does not."""
    return sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))

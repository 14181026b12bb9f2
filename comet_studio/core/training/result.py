"""What a fit reports: one ``RoundEvent`` per round while it runs, one ``FitResult`` at the end."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["RoundEvent", "FitResult"]


@dataclass(frozen=True)
class RoundEvent:
    """What one round did, for a progress bar, a live plot or history.json."""

    round: int
    rounds: int
    train_loss: float
    val_loss: float
    lam: float
    threshold: float
    scores: np.ndarray
    weights: np.ndarray
    rejected: np.ndarray
    seconds: float
    best_round: int

    def summary(self) -> dict:
        return {"round": self.round, "train_loss": self.train_loss, "val_loss": self.val_loss, "lambda": self.lam,
                "threshold": self.threshold, "seconds": self.seconds, "best_round": self.best_round,
                "n_rejected": int(self.rejected.sum()), "mean_weight": float(self.weights.mean())}


@dataclass
class FitResult:
    """The outcome of ``CoMetTrainer.fit``. Scores and weights come from the selected (best) model."""

    scores: np.ndarray
    weights: np.ndarray
    rejected: np.ndarray
    threshold: float
    median: float
    best_round: int
    stopped: bool
    history: list[dict] = field(default_factory=list)
    validation_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

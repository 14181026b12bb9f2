"""Model selection on a held-out split of the training images (their self-supervised loss), never on test
labels: the split, the losses that compare rounds, and the best round so far."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..detectors.base import DetectorHead
from .state import TrainerState
from .weighting import SampleWeights

__all__ = ["ValidationSplit", "validation_split", "sample_weighted", "BestRound", "validation_loss",
           "selection_loss"]

Tensors = dict[str, torch.Tensor]
PatchWeights = Callable[[torch.Tensor], torch.Tensor | None]  # image indices -> their patch weights, or None


@dataclass(frozen=True)
class ValidationSplit:
    validation: torch.Tensor
    train: torch.Tensor


def validation_split(n: int, fraction: float, generator: torch.Generator) -> ValidationSplit:
    """A fixed, seeded held-out split for model selection (at least 2 images, at most a fraction)."""
    n_val = int(round(fraction * n)) if fraction > 0 else 0
    n_val = min(max(n_val, 2 if fraction > 0 else 0), n - 4) if n > 6 else 0
    order = torch.randperm(n, generator=generator)
    return ValidationSplit(validation=order[:n_val].sort().values, train=order[n_val:].sort().values)


def sample_weighted(pool: torch.Tensor, weights: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices from ``pool`` drawn without replacement, with probability proportional to weight."""
    w = weights[pool].clamp_min(0)
    available = int((w > 0).sum())
    if available == 0:
        raise RuntimeError("every training sample has weight 0 (all excluded or rejected); nothing to train on")
    pick = torch.multinomial(w, min(size, available), replacement=False, generator=generator)
    return pool[pick]


@torch.no_grad()
def validation_loss(head: DetectorHead, features: torch.Tensor, val_idx: torch.Tensor, weights: torch.Tensor,
                    batch_size: int, device: torch.device, sampling: torch.Generator, noise: torch.Generator,
                    weigh: PatchWeights) -> float:
    """Weighted loss of one random held-out batch (the adaptive L2 term's signal after each plain step)."""
    idx = val_idx[torch.randint(len(val_idx), (min(batch_size, len(val_idx)),), generator=sampling)]
    w = weights[idx].to(device)
    loss = head.per_sample_loss(features[idx].to(device).float(), noise, patch_weights=weigh(idx))
    return float((loss * w).sum() / w.sum().clamp_min(1e-12))


@torch.no_grad()
def selection_loss(head: DetectorHead, features: torch.Tensor, val_idx: torch.Tensor, weights: torch.Tensor,
                   device: torch.device, seed: int, weigh: PatchWeights) -> float:
    """Weighted held-out loss with a fixed noise seed, so rounds are compared on the same noise."""
    generator = torch.Generator(device=device).manual_seed(seed + 7)
    total, norm = 0.0, 0.0
    for i in range(0, len(val_idx), 32):
        idx = val_idx[i:i + 32]
        w = weights[idx].to(device)
        loss = head.per_sample_loss(features[idx].to(device).float(), generator, patch_weights=weigh(idx))
        total += float((loss * w).sum())
        norm += float(w.sum())
    return total / max(norm, 1e-12)


@dataclass
class BestRound:
    """The selected round so far: its held-out loss, index and head weights, and the IQR threshold and median
    of its training scores (the post-processing a model saved now would carry)."""

    loss: float = math.inf
    round: int = -1
    head: Tensors | None = None
    threshold: float = math.nan
    median: float = math.nan

    @classmethod
    def resumed(cls, state: TrainerState) -> "BestRound":
        return cls(state.best_loss, state.best_round, state.best_head, state.best_threshold, state.best_median)

    def consider(self, loss: float, round: int, head: DetectorHead, warmup_rounds: int) -> bool:
        """Keep ``head`` if ``loss`` is the lowest so far; True when kept. Weights only move after warm-up,
        so every warm-up round replaces the previous one: selection is among rounds that trained on them."""
        if loss <= self.loss or self.round < warmup_rounds:
            self.loss, self.round, self.head = loss, round, copy.deepcopy(head.state_dict())
            return True
        return False

    def keep_post(self, weights: SampleWeights) -> None:
        self.threshold, self.median = weights.threshold, weights.median

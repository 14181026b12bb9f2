"""The loop of a training-free head (patch memories): fitted by ``fit_statistics`` alone, so a "round" rebuilds
the memory without the rejected images and scores the training images leave-one-out."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..config import TrainConfig
from ..detectors.base import DetectorHead
from .control import TrainingControl
from .result import FitResult, RoundEvent
from .round_weights import OpinionGate, not_forced_good
from .scoring import score_features
from .weighting import Override, SampleWeights, confidence_weights

__all__ = ["TRAINING_FREE_ROUNDS", "fit_training_free"]

# Rebuilding a patch memory without the rejected images settles in 2-3 rounds; later rounds only reshuffle
# borderline images.
TRAINING_FREE_ROUNDS = 4


def fit_training_free(head: DetectorHead, features: torch.Tensor, config: TrainConfig, *, device: torch.device,
                      overrides: dict[int, Override], gate: OpinionGate | None,
                      control: TrainingControl) -> FitResult:
    """Excluded images stay out of the memory; training images are scored leave-one-out. With ``refine``,
    the memory is rebuilt without the rejected images until the rejected set stops changing (at most
    ``TRAINING_FREE_ROUNDS`` rounds). With a gating opinion, the images it puts out start out of the memory
    (a "good" override wins)."""
    comet = config.comet
    n = len(features)
    rejected = np.array([overrides.get(i) == "exclude" for i in range(n)], dtype=bool)
    not_good = not_forced_good(n, overrides)
    if gate is not None:
        rejected |= gate.out & not_good
    rounds = min(config.rounds, TRAINING_FREE_ROUNDS) if comet.refine else 1
    history: list[dict] = []
    stopped = False
    for r in range(rounds):
        start = time.perf_counter()
        scores = _memory_scores(head, features, ~rejected, device, control.stage(f"memory pass {r + 1}"))
        state = confidence_weights(scores, comet.iqr_k, hard=comet.refine, overrides=overrides,
                                   ignore=rejected if gate is not None else None)
        if gate is not None:  # images out of the memory stay out of the weights
            keep_out = rejected & not_good
            state = SampleWeights(np.where(keep_out, 0.0, state.weights), state.rejected | keep_out,
                                  state.threshold, state.median)
        event = RoundEvent(round=r, rounds=rounds, train_loss=math.nan, val_loss=math.nan, lam=0.0,
                           threshold=state.threshold, scores=scores, weights=state.weights.copy(),
                           rejected=state.rejected.copy(), seconds=time.perf_counter() - start, best_round=r)
        history.append(event.summary())
        control.round_finished(event)
        converged = np.array_equal(state.rejected, rejected)
        rejected = state.rejected
        stopped = control.stop_requested() and r + 1 < rounds
        if converged or stopped:
            break
    return FitResult(scores=scores, weights=state.weights, rejected=state.rejected, threshold=state.threshold,
                     median=state.median, best_round=len(history) - 1, stopped=stopped, history=history)


def _memory_scores(head: DetectorHead, features: torch.Tensor, keep: np.ndarray, device: torch.device,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Fit a training-free head on the ``keep`` images; score those leave-one-out (reporting
    ``progress(done, total)``: minutes on a CPU), the others normally."""
    kept = torch.as_tensor(np.flatnonzero(keep))
    fitted = features if keep.all() else features[kept]
    head.fit_statistics(fitted)
    scores = np.empty(len(features))
    scores[kept.numpy()] = head.training_scores(fitted, progress=progress).numpy()
    if not keep.all():
        scores[~keep] = score_features(head, features[torch.as_tensor(np.flatnonzero(~keep))], device)
    return scores

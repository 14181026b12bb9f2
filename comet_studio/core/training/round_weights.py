"""Each round's confidence weights: the first ones (before any score), the opinion gate, the prior blend and
the plain IQR weights of the detector's own scores. Overrides ("good" / "exclude") always win."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import CoMetConfig, TrainConfig
from .opinion import MemoryOpinion, fenced_out
from .weighting import Override, SampleWeights, confidence_weights

__all__ = ["OpinionGate", "first_weights", "start_weights", "not_forced_good", "robust_z", "round_weights"]


def robust_z(scores: np.ndarray) -> np.ndarray:
    q1, median, q3 = np.percentile(scores, [25, 50, 75])
    return (scores - median) / max(q3 - q1, 1e-12 * (abs(median) + 1.0))


def not_forced_good(n: int, overrides: dict[int, Override]) -> np.ndarray:
    return np.array([overrides.get(i) != "good" for i in range(n)], dtype=bool)


def start_weights(out: np.ndarray, overrides: dict[int, Override]) -> SampleWeights:
    """First weights before any score: 0 for the ``out`` images, 1 for the rest; overrides win."""
    weights = np.where(out, 0.0, 1.0)
    rejected = out.copy()
    for index, choice in overrides.items():
        weights[index] = 1.0 if choice == "good" else 0.0
        rejected[index] = choice == "exclude"
    return SampleWeights(weights=weights, rejected=rejected, threshold=math.nan, median=math.nan)


def first_weights(n: int, overrides: dict[int, Override], prior_scores: np.ndarray | None, k: float,
                  hard: bool) -> SampleWeights:
    """Without a gate: the prior's confidence weights, or all 1 when there is no prior."""
    if prior_scores is not None:
        return confidence_weights(prior_scores, k, hard=hard, overrides=overrides)
    return start_weights(np.zeros(n, dtype=bool), overrides)


def _blended_weights(scores: np.ndarray, prior: np.ndarray | None, comet: CoMetConfig,
                     overrides: dict[int, Override]) -> SampleWeights:
    """Confidence weights from the detector's scores, blended with the prior's by ``comet.prior_blend``.

    Both are put on one robust scale ((s - median) / IQR) and averaged; unlike a rank average, this keeps
    outliers far out, so the IQR fence still finds them. The threshold and median stay the detector's
    (they set the decision threshold of the saved model)."""
    state = confidence_weights(scores, comet.iqr_k, hard=comet.refine, overrides=overrides)
    if prior is None or comet.prior_blend == 0:
        return state
    mixed = comet.prior_blend * robust_z(np.asarray(prior, dtype=np.float64)) \
        + (1 - comet.prior_blend) * robust_z(scores)
    blended = confidence_weights(mixed, comet.iqr_k, hard=comet.refine, overrides=overrides)
    return SampleWeights(blended.weights, blended.rejected, state.threshold, state.median)


def _with_threshold(state: SampleWeights, scores: np.ndarray, k: float,
                    overrides: dict[int, Override]) -> SampleWeights:
    """Keep the weights, refresh the (reported) IQR threshold from the new scores."""
    fresh = confidence_weights(scores, k, overrides=overrides)
    return SampleWeights(state.weights, state.rejected, fresh.threshold, fresh.median)


@dataclass(frozen=True)
class OpinionGate:
    """The opinion in charge (``TrustConfig.mode == "gate"``): ``out`` = images above the opinion's fence,
    ``patch_weights`` (N, h, w) = 0 for the distrusted patches (None when off), ``out_teach``: the out images
    still teach their trusted patches (``TrustConfig.teach_trusted_patches``)."""

    out: np.ndarray
    patch_weights: torch.Tensor | None
    comeback_z: float
    out_teach: bool = False

    @classmethod
    def build(cls, prior_scores: np.ndarray | None, opinion: MemoryOpinion | None, config: TrainConfig,
              grid: tuple[int, int]) -> "OpinionGate | None":
        trust = config.trust
        # The opinion is part of the weighting: plain training (CoMetConfig.baseline()) trains on everything.
        if prior_scores is None or trust.mode != "gate" or not config.comet.weighting:
            return None
        out = fenced_out(prior_scores, trust)
        patches = opinion.patch_weights(trust, grid, keep=~out) if opinion is not None and trust.patch_weights \
            else None
        out_teach = opinion is not None and trust.teach_trusted_patches and bool(out.any())
        if out_teach:
            # Only the out images lose patches: a global patch fence also drops the rarest normal patches.
            trusted = opinion.patch_weights(trust, grid, keep=~out, margin=trust.patch_margin)
            mask = torch.as_tensor(out)[:, None, None]
            patches = torch.where(mask, trusted, patches if patches is not None else torch.ones_like(trusted))
        return cls(out=out, patch_weights=patches, comeback_z=trust.comeback_z, out_teach=out_teach)

    def training_weights(self, state: SampleWeights, overrides: dict[int, Override]) -> np.ndarray:
        """The weights the head trains with: ``state``'s, except that an image the fence put out (and the
        user did not exclude) teaches its trusted patches at full weight."""
        if not self.out_teach:
            return state.weights
        excluded = np.array([overrides.get(i) == "exclude" for i in range(len(state.weights))], dtype=bool)
        return np.where(self.out & (state.weights == 0) & ~excluded, 1.0, state.weights)

    def initial(self, overrides: dict[int, Override]) -> SampleWeights:
        return start_weights(self.out, overrides)

    def weights(self, scores: np.ndarray, comet: CoMetConfig, overrides: dict[int, Override]) -> SampleWeights:
        """The detector's own confidence weights (CoMet's SCL, or refinement's hard rejection) over the images
        the opinion let in; an image it put out comes back only when the detector scores it at least
        ``comeback_z`` robust units (IQR) below its median. The fence and median (the saved decision
        threshold) are read from the images that stay in."""
        back = robust_z(scores) < self.comeback_z
        out = self.out & ~back & not_forced_good(len(scores), overrides)
        state = confidence_weights(scores, comet.iqr_k, hard=comet.refine, overrides=overrides, ignore=out)
        return SampleWeights(np.where(out, 0.0, state.weights), state.rejected | out, state.threshold, state.median)


def round_weights(scores: np.ndarray, *, gate: OpinionGate | None, prior: np.ndarray | None, comet: CoMetConfig,
                  overrides: dict[int, Override], previous: SampleWeights, warmed_up: bool) -> SampleWeights:
    """The weights after a round (and, with ``warmed_up=True``, the final ones) from the current scores: the
    gate's; else, once warmed up, the detector's blended with the prior; else the previous weights with a
    fresh threshold."""
    if gate is not None:
        return gate.weights(scores, comet, overrides)
    if comet.weighting and warmed_up:
        return _blended_weights(scores, prior, comet, overrides)
    return _with_threshold(previous, scores, comet.iqr_k, overrides)

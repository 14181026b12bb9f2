"""The CoMet trainer: model-agnostic confident meta-learning over cached features.

Each round: train (plain mini-batches or Reptile tasks, drawn with probability proportional to the
confidence weights), then score every training image with the current model and recompute the weights for
the next round. Model selection uses only a held-out split of the training images (their self-supervised
loss), never test labels.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import CoMetConfig, TrainConfig
from ..detectors.base import DetectorHead
from .meta import MetaLearner
from .opinion import MemoryOpinion, fenced_out
from .regularization import AdaptiveL2, l2_to_anchor
from .state import TrainerState, capture_state, restore_state
from .weighting import Override, SampleWeights, confidence_weights

__all__ = ["RoundEvent", "FitResult", "CoMetTrainer", "score_features", "TRAINING_FREE_ROUNDS"]

# Rebuilding a patch memory without the rejected images settles in 2-3 rounds; later rounds only reshuffle
# borderline images.
TRAINING_FREE_ROUNDS = 4


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


@torch.no_grad()
def score_features(head: DetectorHead, features: torch.Tensor, device: torch.device,
                   batch_size: int = 32) -> np.ndarray:
    """Image scores for cached features, batched on ``device``."""
    head.eval()
    out = [head.image_scores(features[i:i + batch_size].to(device).float()).cpu()
           for i in range(0, len(features), batch_size)]
    head.train()
    return torch.cat(out).numpy().astype(np.float64)


class CoMetTrainer:
    """Trains any ``DetectorHead`` on cached features with the CoMet strategy in ``config.comet``."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def fit(
        self,
        head: DetectorHead,
        features: torch.Tensor,
        *,
        device: torch.device,
        overrides: dict[int, Override] | None = None,
        prior_scores: np.ndarray | None = None,
        opinion: MemoryOpinion | None = None,
        callback: Callable[[RoundEvent], None] | None = None,
        stop: threading.Event | None = None,
        resume: TrainerState | None = None,
        on_state: Callable[[TrainerState], None] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> FitResult:
        """Train ``head`` for ``config.rounds`` rounds. ``on_state`` receives a ``TrainerState`` after every
        completed round (trained heads only); passing one back as ``resume`` (same head, features and
        config) continues after that round exactly as if training had never stopped.

        ``opinion`` (the memory's leave-one-out opinion, ``opinion.py``) or bare ``prior_scores``: with
        ``config.trust.mode == "gate"`` the images above the opinion's fence start (and stay) out unless the
        detector clears them, and the opinion's patch weights scale each patch's loss; with "blend", the
        earlier robust-scale blend of image scores."""
        cfg, comet = self.config, self.config.comet
        n = len(features)
        overrides = dict(overrides or {})
        if opinion is not None:
            if len(opinion) != n:
                raise ValueError(f"the opinion covers {len(opinion)} images, but {n} training images were given")
            prior_scores = opinion.image_scores
        if prior_scores is not None and len(prior_scores) != n:
            raise ValueError(f"prior_scores has {len(prior_scores)} entries for {n} training images")
        gate = _Gate.build(prior_scores, opinion, cfg, tuple(features.shape[2:]))
        rng = torch.Generator().manual_seed(cfg.seed)
        noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        head.to(device)
        if not head.trainable:
            return self._training_free(head, features, device, overrides, callback, stop, gate, progress)
        head.fit_statistics(features)
        val_idx, train_idx = _split(n, cfg.validation_fraction, rng)
        state = gate.initial(overrides) if gate is not None else \
            _initial_weights(n, overrides, prior_scores, comet.iqr_k, comet.refine)
        patch_weights = gate.patch_weights if gate is not None else None

        def weigh(idx: torch.Tensor) -> torch.Tensor | None:
            return None if patch_weights is None else patch_weights[idx]

        params = head.trainable_parameters()
        anchor = [p.detach().clone() for p in params]
        optimiser = torch.optim.Adam(params, lr=_learning_rate(head), betas=(0.5, 0.999))
        l2 = AdaptiveL2(comet.l2_base, comet.l2_gamma, comet.l2_window, comet.l2_max_factor, comet.adaptive_l2)
        meta = MetaLearner(comet, optimiser) if comet.meta else None
        best = (math.inf, -1, None)
        best_post = (math.nan, math.nan)  # IQR threshold and median of the best round's scores
        history: list[dict] = []
        generators = {"sampling": rng, "noise": noise}
        if resume is not None:
            restore_state(resume, n_samples=n, head=head, anchor=anchor, optimiser=optimiser, l2=l2,
                          generators=generators)
            state, history = resume.weights, list(resume.history)
            best = (resume.best_loss, resume.best_round, resume.best_head)
            best_post = (resume.best_threshold, resume.best_median)
        stopped = False
        for r in range(0 if resume is None else resume.round + 1, cfg.rounds):
            start = time.perf_counter()
            weights = torch.as_tensor(state.weights, dtype=torch.float32)
            losses = []
            steps = cfg.steps_per_round  # with meta-learning, one step = one task (support + query)
            for _ in range(steps):
                if stop is not None and stop.is_set():
                    stopped = True
                    break

                def loss_fn(idx: torch.Tensor) -> torch.Tensor:
                    batch = features[idx].to(device, non_blocking=True).float()
                    per_sample = head.per_sample_loss(batch, noise, patch_weights=weigh(idx))
                    if comet.loss_weights:  # a half-trusted image teaches half, not only half as often
                        per_sample = per_sample * weights[idx].to(per_sample)
                    return per_sample.mean() + l2.value * l2_to_anchor(params, anchor)

                if meta is not None:
                    task = _sample(train_idx, weights, comet.task_size, rng)
                    train_loss, val_loss = meta.step(params, task, loss_fn)
                else:
                    batch_idx = _sample(train_idx, weights, cfg.batch_size, rng)
                    optimiser.zero_grad(set_to_none=True)
                    loss = loss_fn(batch_idx)
                    loss.backward()
                    optimiser.step()
                    train_loss = float(loss.detach())
                    val_loss = _validation_loss(head, features, val_idx, weights, cfg.batch_size, device, rng,
                                                noise, weigh) if len(val_idx) else train_loss
                l2.update(train_loss, val_loss)
                losses.append(train_loss)
            if stopped and not losses:
                break
            val = _selection_loss(head, features, val_idx, weights, device, cfg.seed, weigh) \
                if len(val_idx) else r
            # Weights only move after warm-up; select among rounds that trained on them.
            if val <= best[0] or best[1] < comet.warmup_rounds:
                best = (val, r, copy.deepcopy(head.state_dict()))
            scores = score_features(head, features, device)
            if gate is not None:
                state = gate.weights(scores, comet, overrides)
            elif comet.weighting and r + 1 >= comet.warmup_rounds:
                state = _blended_weights(scores, prior_scores, comet, overrides)
            else:
                state = _with_threshold(state, scores, comet.iqr_k, overrides)
            if best[1] == r:
                best_post = (state.threshold, state.median)
            event = RoundEvent(
                round=r, rounds=cfg.rounds, train_loss=float(np.mean(losses)) if losses else math.nan,
                val_loss=float(val), lam=l2.value, threshold=state.threshold, scores=scores,
                weights=state.weights.copy(), rejected=state.rejected.copy(),
                seconds=time.perf_counter() - start, best_round=best[1])
            history.append(event.summary())
            if callback is not None:
                callback(event)
            if stopped:
                break  # a partial round: the last state handed out stays the one to resume from
            if on_state is not None:
                on_state(capture_state(round=r, n_samples=n, head=head, best=best, best_post=best_post,
                                       anchor=anchor, optimiser=optimiser, l2=l2, weights=state,
                                       generators=generators, history=history))
        if best[2] is not None:
            head.load_state_dict(best[2])
        scores = score_features(head, features, device)
        if gate is not None:
            final = gate.weights(scores, comet, overrides)
        elif comet.weighting:
            final = _blended_weights(scores, prior_scores, comet, overrides)
        else:
            final = _with_threshold(state, scores, comet.iqr_k, overrides)
        return FitResult(scores=scores, weights=final.weights, rejected=final.rejected, threshold=final.threshold,
                         median=final.median, best_round=best[1], stopped=stopped, history=history,
                         validation_indices=val_idx.numpy())

    def _training_free(self, head, features, device, overrides, callback, stop, gate, progress) -> FitResult:
        """Heads fitted by ``fit_statistics`` alone (patch memories). Excluded images stay out of the memory;
        training images are scored leave-one-out. With ``refine``, the memory is rebuilt without the
        rejected images until the rejected set stops changing (at most ``TRAINING_FREE_ROUNDS`` rounds).
        With a gating opinion, the images it puts out start out of the memory (a "good" override wins)."""
        comet = self.config.comet
        n = len(features)
        rejected = np.array([overrides.get(i) == "exclude" for i in range(n)], dtype=bool)
        not_good = _not_forced_good(n, overrides)
        if gate is not None:
            rejected |= gate.out & not_good
        rounds = min(self.config.rounds, TRAINING_FREE_ROUNDS) if comet.refine else 1
        history: list[dict] = []
        stopped = False
        for r in range(rounds):
            start = time.perf_counter()
            report = (lambda done, total, r=r: progress(f"memory pass {r + 1}", done, total)) if progress else None
            scores = _memory_scores(head, features, ~rejected, device, report)
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
            if callback is not None:
                callback(event)
            converged = np.array_equal(state.rejected, rejected)
            rejected = state.rejected
            stopped = stop is not None and stop.is_set() and r + 1 < rounds
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


def _robust_z(scores: np.ndarray) -> np.ndarray:
    q1, median, q3 = np.percentile(scores, [25, 50, 75])
    return (scores - median) / max(q3 - q1, 1e-12 * (abs(median) + 1.0))


def _blended_weights(scores: np.ndarray, prior: np.ndarray | None, comet: CoMetConfig,
                     overrides: dict[int, Override]) -> SampleWeights:
    """Confidence weights from the detector's scores, blended with the prior's by ``comet.prior_blend``.

    Both are put on one robust scale ((s - median) / IQR) and averaged; unlike a rank average, this keeps
    outliers far out, so the IQR fence still finds them. The threshold and median stay the detector's
    (they set the decision threshold of the saved model)."""
    state = confidence_weights(scores, comet.iqr_k, hard=comet.refine, overrides=overrides)
    if prior is None or comet.prior_blend == 0:
        return state
    mixed = comet.prior_blend * _robust_z(np.asarray(prior, dtype=np.float64)) \
        + (1 - comet.prior_blend) * _robust_z(scores)
    blended = confidence_weights(mixed, comet.iqr_k, hard=comet.refine, overrides=overrides)
    return SampleWeights(blended.weights, blended.rejected, state.threshold, state.median)


def _learning_rate(head: DetectorHead) -> float:
    return float(getattr(getattr(head, "config", None), "learning_rate", 1e-3))


def _split(n: int, fraction: float, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded held-out split for model selection (at least 2 images, at most a fraction)."""
    n_val = int(round(fraction * n)) if fraction > 0 else 0
    n_val = min(max(n_val, 2 if fraction > 0 else 0), n - 4) if n > 6 else 0
    order = torch.randperm(n, generator=rng)
    return order[:n_val].sort().values, order[n_val:].sort().values


def _initial_weights(n: int, overrides: dict[int, Override], prior_scores: np.ndarray | None, k: float,
                     hard: bool) -> SampleWeights:
    if prior_scores is not None:
        return confidence_weights(prior_scores, k, hard=hard, overrides=overrides)
    return _start(np.zeros(n, dtype=bool), overrides)


def _start(out: np.ndarray, overrides: dict[int, Override]) -> SampleWeights:
    """First weights before any score: 0 for the ``out`` images, 1 for the rest; overrides win."""
    weights = np.where(out, 0.0, 1.0)
    rejected = out.copy()
    for index, choice in overrides.items():
        weights[index] = 1.0 if choice == "good" else 0.0
        rejected[index] = choice == "exclude"
    return SampleWeights(weights=weights, rejected=rejected, threshold=math.nan, median=math.nan)


def _not_forced_good(n: int, overrides: dict[int, Override]) -> np.ndarray:
    return np.array([overrides.get(i) != "good" for i in range(n)], dtype=bool)


def _with_threshold(state: SampleWeights, scores: np.ndarray, k: float,
                    overrides: dict[int, Override]) -> SampleWeights:
    """Keep the weights, refresh the (reported) IQR threshold from the new scores."""
    fresh = confidence_weights(scores, k, overrides=overrides)
    return SampleWeights(state.weights, state.rejected, fresh.threshold, fresh.median)


def _sample(pool: torch.Tensor, weights: torch.Tensor, size: int, rng: torch.Generator) -> torch.Tensor:
    """Indices from ``pool`` drawn without replacement, with probability proportional to weight."""
    w = weights[pool].clamp_min(0)
    available = int((w > 0).sum())
    if available == 0:
        raise RuntimeError("every training sample has weight 0 (all excluded or rejected); nothing to train on")
    pick = torch.multinomial(w, min(size, available), replacement=False, generator=rng)
    return pool[pick]


@torch.no_grad()
def _validation_loss(head, features, val_idx, weights, batch_size, device, rng, noise, weigh) -> float:
    idx = val_idx[torch.randint(len(val_idx), (min(batch_size, len(val_idx)),), generator=rng)]
    w = weights[idx].to(device)
    loss = head.per_sample_loss(features[idx].to(device).float(), noise, patch_weights=weigh(idx))
    return float((loss * w).sum() / w.sum().clamp_min(1e-12))


@torch.no_grad()
def _selection_loss(head, features, val_idx, weights, device, seed: int, weigh) -> float:
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


@dataclass(frozen=True)
class _Gate:
    """The opinion in charge (``TrustConfig.mode == "gate"``): ``out`` = images above the opinion's fence,
    ``patch_weights`` (N, h, w) = 0 for the distrusted patches (None when off)."""

    out: np.ndarray
    patch_weights: torch.Tensor | None
    comeback_z: float

    @classmethod
    def build(cls, prior_scores, opinion, config: TrainConfig, grid: tuple[int, int]) -> "_Gate | None":
        trust = config.trust
        # The opinion is part of the weighting: plain training (CoMetConfig.baseline()) trains on everything.
        if prior_scores is None or trust.mode != "gate" or not config.comet.weighting:
            return None
        out = fenced_out(prior_scores, trust)
        patches = opinion.patch_weights(trust, grid, keep=~out) if opinion is not None and trust.patch_weights \
            else None
        return cls(out=out, patch_weights=patches, comeback_z=trust.comeback_z)

    def initial(self, overrides: dict[int, Override]) -> SampleWeights:
        return _start(self.out, overrides)

    def weights(self, scores: np.ndarray, comet: CoMetConfig, overrides: dict[int, Override]) -> SampleWeights:
        """The detector's own confidence weights (CoMet's SCL, or refinement's hard rejection) over the images
        the opinion let in; an image it put out comes back only when the detector scores it at least
        ``comeback_z`` robust units (IQR) below its median. The fence and median (the saved decision
        threshold) are read from the images that stay in."""
        back = _robust_z(scores) < self.comeback_z
        out = self.out & ~back & _not_forced_good(len(scores), overrides)
        state = confidence_weights(scores, comet.iqr_k, hard=comet.refine, overrides=overrides, ignore=out)
        return SampleWeights(np.where(out, 0.0, state.weights), state.rejected | out, state.threshold, state.median)

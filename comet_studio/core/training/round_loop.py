"""The round loop of a trained head. Each round: train (plain mini-batches or Reptile tasks, drawn with
probability proportional to the confidence weights), keep the round if its held-out loss is the best so
far, then score every training image with the current model and recompute the weights for the next round."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig
from ..detectors.base import DetectorHead
from .control import TrainingControl
from .meta import MetaLearner
from .regularization import AdaptiveL2, l2_to_anchor
from .result import FitResult, RoundEvent
from .round_weights import OpinionGate, first_weights, round_weights
from .scoring import score_features
from .selection import BestRound, ValidationSplit, sample_weighted, selection_loss, validation_loss, \
    validation_split
from .state import TrainerState, capture_state, restore_state
from .weighting import Override, SampleWeights

__all__ = ["TrainerGenerators", "fit_rounds"]


@dataclass(frozen=True)
class TrainerGenerators:
    """The trainer's only sources of randomness: ``sampling`` (split, batches, tasks) on the CPU and
    ``noise`` (the head's own draws, e.g. SimpleNet's noise) on the training device."""

    sampling: torch.Generator
    noise: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> "TrainerGenerators":
        return cls(sampling=torch.Generator().manual_seed(seed),
                   noise=torch.Generator(device=device).manual_seed(seed + 1))

    def by_name(self) -> dict[str, torch.Generator]:
        """The names a ``TrainerState`` saves them under."""
        return {"sampling": self.sampling, "noise": self.noise}


class _Optimisation:
    """The trainable parameters, their L2 anchor (the starting point), Adam, the adaptive L2 term and, with
    meta-learning on, Reptile."""

    def __init__(self, head: DetectorHead, config: TrainConfig) -> None:
        comet = config.comet
        self.params = head.trainable_parameters()
        self.anchor = [p.detach().clone() for p in self.params]
        learning_rate = float(getattr(getattr(head, "config", None), "learning_rate", 1e-3))
        self.adam = torch.optim.Adam(self.params, lr=learning_rate, betas=(0.5, 0.999))
        self.l2 = AdaptiveL2(comet.l2_base, comet.l2_gamma, comet.l2_window, comet.l2_max_factor,
                             comet.adaptive_l2)
        self.meta = MetaLearner(comet, self.adam) if comet.meta else None

    def restore(self, state: TrainerState, head: DetectorHead, generators: TrainerGenerators, n: int) -> None:
        restore_state(state, n_samples=n, head=head, anchor=self.anchor, optimiser=self.adam, l2=self.l2,
                      generators=generators.by_name())


@dataclass(frozen=True)
class _Fit:
    """What every step of one fit reads."""

    head: DetectorHead
    features: torch.Tensor
    config: TrainConfig
    device: torch.device
    generators: TrainerGenerators
    split: ValidationSplit
    patch_weights: torch.Tensor | None

    def weigh(self, idx: torch.Tensor) -> torch.Tensor | None:
        return None if self.patch_weights is None else self.patch_weights[idx]


def _train_round(fit: _Fit, opt: _Optimisation, weights: torch.Tensor,
                 control: TrainingControl) -> tuple[list[float], bool]:
    """``steps_per_round`` steps (with meta-learning, one step = one task: support + query); the training
    losses, and whether a stop request cut the round short."""
    cfg, comet = fit.config, fit.config.comet
    sampling, noise = fit.generators.sampling, fit.generators.noise

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        batch = fit.features[idx].to(fit.device, non_blocking=True).float()
        per_sample = fit.head.per_sample_loss(batch, noise, patch_weights=fit.weigh(idx))
        if comet.loss_weights:  # a half-trusted image teaches half, not only half as often
            per_sample = per_sample * weights[idx].to(per_sample)
        return per_sample.mean() + opt.l2.value * l2_to_anchor(opt.params, opt.anchor)

    losses: list[float] = []
    for _ in range(cfg.steps_per_round):
        if control.stop_requested():
            return losses, True
        if opt.meta is not None:
            task = sample_weighted(fit.split.train, weights, comet.task_size, sampling)
            train_loss, val_loss = opt.meta.step(opt.params, task, loss_fn)
        else:
            batch_idx = sample_weighted(fit.split.train, weights, cfg.batch_size, sampling)
            opt.adam.zero_grad(set_to_none=True)
            loss = loss_fn(batch_idx)
            loss.backward()
            opt.adam.step()
            train_loss = float(loss.detach())
            val_loss = validation_loss(fit.head, fit.features, fit.split.validation, weights, cfg.batch_size,
                                       fit.device, sampling, noise, fit.weigh) \
                if len(fit.split.validation) else train_loss
        opt.l2.update(train_loss, val_loss)
        losses.append(train_loss)
    return losses, False


def fit_rounds(head: DetectorHead, features: torch.Tensor, config: TrainConfig, *, device: torch.device,
               overrides: dict[int, Override], prior_scores: np.ndarray | None, gate: OpinionGate | None,
               resume: TrainerState | None, control: TrainingControl) -> FitResult:
    """Train ``head`` for ``config.rounds`` rounds (from after ``resume.round`` when resuming) and load the
    selected round's weights into it."""
    comet, n = config.comet, len(features)
    generators = TrainerGenerators.seeded(config.seed, device)
    head.fit_statistics(features)
    split = validation_split(n, config.validation_fraction, generators.sampling)
    state: SampleWeights = gate.initial(overrides) if gate is not None else \
        first_weights(n, overrides, prior_scores, comet.iqr_k, comet.refine)
    fit = _Fit(head, features, config, device, generators, split, gate.patch_weights if gate is not None else None)
    opt = _Optimisation(head, config)
    best, history = BestRound(), []
    if resume is not None:
        opt.restore(resume, head, generators, n)
        state, history, best = resume.weights, list(resume.history), BestRound.resumed(resume)
    stopped = False
    for r in range(0 if resume is None else resume.round + 1, config.rounds):
        start = time.perf_counter()
        weights = torch.as_tensor(gate.training_weights(state, overrides) if gate is not None else state.weights,
                                  dtype=torch.float32)
        losses, stopped = _train_round(fit, opt, weights, control)
        if stopped and not losses:
            break
        val = selection_loss(head, features, split.validation, weights, device, config.seed, fit.weigh) \
            if len(split.validation) else r
        kept = best.consider(val, r, head, comet.warmup_rounds)
        scores = score_features(head, features, device)
        state = round_weights(scores, gate=gate, prior=prior_scores, comet=comet, overrides=overrides,
                              previous=state, warmed_up=r + 1 >= comet.warmup_rounds)
        if kept:
            best.keep_post(state)
        event = RoundEvent(
            round=r, rounds=config.rounds, train_loss=float(np.mean(losses)) if losses else math.nan,
            val_loss=float(val), lam=opt.l2.value, threshold=state.threshold, scores=scores,
            weights=state.weights.copy(), rejected=state.rejected.copy(),
            seconds=time.perf_counter() - start, best_round=best.round)
        history.append(event.summary())
        control.round_finished(event)
        if stopped:
            break  # a partial round: the last state handed out stays the one to resume from
        control.checkpoint(lambda r=r, state=state: capture_state(
            round=r, n_samples=n, head=head, best=(best.loss, best.round, best.head),
            best_post=(best.threshold, best.median), anchor=opt.anchor, optimiser=opt.adam, l2=opt.l2,
            weights=state, generators=generators.by_name(), history=history))
    if best.head is not None:
        head.load_state_dict(best.head)
    scores = score_features(head, features, device)
    final = round_weights(scores, gate=gate, prior=prior_scores, comet=comet, overrides=overrides,
                          previous=state, warmed_up=True)
    return FitResult(scores=scores, weights=final.weights, rejected=final.rejected, threshold=final.threshold,
                     median=final.median, best_round=best.round, stopped=stopped, history=history,
                     validation_indices=split.validation.numpy())

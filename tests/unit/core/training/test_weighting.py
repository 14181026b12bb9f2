"""Soft Confident Learning weights, hard rejection, overrides, adaptive L2 and the Reptile sign."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comet_studio.core.config import CoMetConfig
from comet_studio.core.training import AdaptiveL2, MetaLearner, confidence_weights, iqr_threshold


def test_iqr_threshold_matches_definition():
    scores = np.arange(1, 101, dtype=float)
    q1, q3 = np.percentile(scores, [25, 75])
    threshold, median = iqr_threshold(scores, 1.5)
    assert threshold == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert median == pytest.approx(50.5)


def test_soft_weights_down_weight_outliers_only():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1.0, 0.1, 95), [3.0, 4.0, 5.0, 6.0, 9.0]])
    state = confidence_weights(scores, 1.5)
    assert np.all(state.weights > 0) and np.all(state.weights <= 1)
    assert np.all(state.weights[:95][scores[:95] <= state.threshold] == 1)
    outliers = state.weights[95:]
    assert np.all(outliers < 0.5) and np.all(np.diff(outliers) < 0)  # further out, lower weight
    expected = (state.threshold - state.median) / (9.0 - state.median)
    assert state.weights[-1] == pytest.approx(expected)
    assert not state.rejected.any()


def test_hard_rejection_and_overrides():
    scores = np.concatenate([np.linspace(0.9, 1.1, 20), [5.0, 6.0]])
    hard = confidence_weights(scores, 1.5, hard=True)
    assert hard.rejected.tolist() == [False] * 20 + [True, True]
    assert hard.weights[-2:].tolist() == [0.0, 0.0]
    forced = confidence_weights(scores, 1.5, hard=True, overrides={21: "good", 0: "exclude"})
    assert forced.weights[21] == 1.0 and not forced.rejected[21]
    assert forced.weights[0] == 0.0 and forced.rejected[0]
    with pytest.raises(ValueError, match="'good' or 'exclude'"):
        confidence_weights(scores, overrides={0: "maybe"})


def test_adaptive_l2_grows_with_loss_fluctuation():
    steady = AdaptiveL2(1e-3, 20.0, 10, 10.0)
    noisy = AdaptiveL2(1e-3, 20.0, 10, 10.0)
    rng = np.random.default_rng(0)
    for t in range(10):
        steady.update(1.0, 1.0)
        noisy.update(1.0 + rng.normal(0, 0.2), 1.0 + rng.normal(0, 0.2))
    assert steady.value == pytest.approx(1e-3)
    assert noisy.value > 3e-3  # ~20 % independent fluctuation -> factor ~ 1 + 20 * 0.2
    fixed = AdaptiveL2(1e-3, 20.0, 10, 10.0, enabled=False)
    for t in range(10):
        fixed.update(1.0 + t, 2.0 - t)
    assert fixed.value == 1e-3


def test_reptile_moves_towards_the_adapted_parameters():
    """theta_new = theta + eps * (theta_adapted - theta): the sign the reference code got wrong."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.zeros(3))
    target = torch.tensor([1.0, -2.0, 3.0])
    optimiser = torch.optim.SGD([param], lr=0.1)
    meta = MetaLearner(CoMetConfig(inner_steps=2, meta_step=0.5), optimiser)

    def loss_fn(idx):
        return ((param - target) ** 2).sum()

    before = (param.detach() - target).norm()
    meta.step([param], torch.arange(4), loss_fn)
    after = (param.detach() - target).norm()
    assert after < before
    # 3 SGD steps of lr 0.1 on (p - t)^2 move p to t * (1 - 0.8^3); Reptile takes half of that
    assert torch.allclose(param.detach(), target * (1 - 0.8**3) * 0.5, atol=1e-6)

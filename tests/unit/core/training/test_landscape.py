"""The loss landscape slice: shape, filter normalisation, the trained point is the minimum, stop, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig
from comet_studio.core.detectors.base import DetectorHead
from comet_studio.core.features import StopRequested
from comet_studio.core.training.landscape import LandscapeConfig, filter_normalised_direction, loss_landscape
from tests.conftest import TINY, good_tiles


@pytest.fixture(scope="module")
def trained() -> AnomalyModel:
    paths = [str(p) for p in good_tiles(12)]
    config = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=TINY))
    train = TrainConfig(rounds=3, steps_per_round=10, comet=CoMetConfig.baseline(), device="cpu")
    return AnomalyModel(config, train=train).fit(paths)


def test_grid_shape_and_coordinates(trained):
    result = loss_landscape(trained.inference_.head, trained.features_, LandscapeConfig(grid=5, max_images=6))
    assert result.losses.shape == (5, 5)
    np.testing.assert_allclose(result.alphas, [-1, -0.5, 0, 0.5, 1])
    assert np.isfinite(result.losses).all()
    assert result.n_images == 6
    assert result.center_loss == result.losses[2, 2]


def test_trained_head_sits_at_the_minimum(trained):
    result = loss_landscape(trained.inference_.head, trained.features_, LandscapeConfig(grid=7))
    i, j = np.unravel_index(result.losses.argmin(), result.losses.shape)
    assert abs(i - 3) <= 1 and abs(j - 3) <= 1
    assert result.losses[[0, 0, -1, -1], [0, -1, 0, -1]].min() > result.center_loss


def test_deterministic_and_leaves_the_head_unchanged(trained):
    head = trained.inference_.head
    before = {k: v.clone() for k, v in head.state_dict().items()}
    config = LandscapeConfig(grid=3, max_images=4)
    first = loss_landscape(head, trained.features_, config)
    second = loss_landscape(head, trained.features_, config)
    np.testing.assert_array_equal(first.losses, second.losses)
    for key, value in head.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_directions_are_filter_normalised():
    params = [torch.randn(4, 3) * torch.tensor([[1.0], [2.0], [5.0], [0.1]]), torch.randn(4), torch.randn(2, 3, 3, 3)]
    direction = filter_normalised_direction(params, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(direction[0].norm(dim=1), params[0].norm(dim=1), rtol=1e-5)
    assert torch.count_nonzero(direction[1]) == 0  # biases do not move
    np.testing.assert_allclose(direction[2].flatten(1).norm(dim=1), params[2].flatten(1).norm(dim=1), rtol=1e-5)


def test_stop_event_interrupts(trained):
    stop = threading.Event()
    calls = []

    def progress(stage, done, total):
        calls.append(done)
        if done == 2:
            stop.set()

    with pytest.raises(StopRequested):
        loss_landscape(trained.inference_.head, trained.features_, LandscapeConfig(grid=5, max_images=4),
                       progress=progress, stop=stop)
    assert calls == [1, 2]


def test_untrainable_head_and_bad_config_are_refused(trained):
    class Fixed(DetectorHead):
        trainable = False

    with pytest.raises(ValueError, match="no trainable parameters"):
        loss_landscape(Fixed(), trained.features_)
    with pytest.raises(ValueError, match="odd"):
        LandscapeConfig(grid=10)
    with pytest.raises(ValueError, match="span"):
        LandscapeConfig(span=0)

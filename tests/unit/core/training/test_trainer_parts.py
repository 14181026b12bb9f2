"""The trainer in parts: randomness only from generators handed in (never torch's global RNG), and one
``TrainingControl`` carrying progress, stop and the per-round hooks through a real fit on real tiles."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig
from comet_studio.core.config import SimpleNetConfig
from comet_studio.core.detectors import build_head
from comet_studio.core.detectors.registry import REGISTRY
from comet_studio.core.training import CoMetTrainer, TrainingControl
from tests.conftest import TINY, good_tiles

MODEL = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=TINY),
                    simplenet=SimpleNetConfig(hidden_dim=64))
TRAIN = TrainConfig(rounds=2, steps_per_round=2, batch_size=4, device="cpu", comet=CoMetConfig(task_size=4))


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    return AnomalyModel(MODEL, train=TRAIN).extract(good_tiles(10))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_a_head_is_built_from_its_generator_alone(name):
    config = ModelConfig(detector=name)
    before = torch.get_rng_state()
    heads = [build_head(config, 32, (4, 4), generator=torch.Generator().manual_seed(s)) for s in (3, 3)]
    assert torch.equal(torch.get_rng_state(), before)  # torch's global RNG was not drawn from
    first, second = (h.state_dict() for h in heads)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert getattr(heads[0], "seed", None) == getattr(heads[1], "seed", None)


def test_the_global_rng_does_not_reach_a_fit(features):
    paths = good_tiles(10)
    results = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        results.append(AnomalyModel(MODEL, train=TRAIN).fit(paths, features=features).result_)
    assert np.array_equal(results[0].scores, results[1].scores)
    assert results[0].threshold == results[1].threshold


def test_one_control_object_carries_progress_hooks_and_stop(features):
    stages, events, states = [], [], []
    control = TrainingControl(progress=lambda stage, done, total: stages.append((stage, done, total)),
                              on_round=events.append, on_state=states.append)
    head = build_head(MODEL, features.shape[1], tuple(features.shape[2:]))
    result = CoMetTrainer(TRAIN).fit(head, features, device=torch.device("cpu"), control=control)
    assert [e.round for e in events] == [0, 1] and [s.round for s in states] == [0, 1]
    assert ("rounds", 2, 2) in stages and not result.stopped
    stop = threading.Event()
    stop.set()  # set before the first step: nothing trains, nothing is handed out
    events.clear()
    head = build_head(MODEL, features.shape[1], tuple(features.shape[2:]))
    result = CoMetTrainer(TRAIN).fit(head, features, device=torch.device("cpu"),
                                     control=TrainingControl(stop=stop, on_round=events.append))
    assert result.stopped and result.best_round == -1 and events == []

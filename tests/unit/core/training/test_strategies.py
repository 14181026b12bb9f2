"""Strategies are defined once (core/training/presets.py); the CLI, the app and the bench read them."""

from __future__ import annotations

import pytest

from comet_studio.app.runs import STRATEGY_LABELS, strategy_name
from comet_studio.cli.main import build_parser
from comet_studio.cli.model_options import configs_from_args
from comet_studio.workflows.bench.grid import METHODS
from comet_studio.core.config import TrainConfig, config_to_dict
from comet_studio.core.training.presets import DEFAULT_STRATEGY, STRATEGIES, comet_parts, strategy_config


def _train(*flags: str) -> TrainConfig:
    return configs_from_args(build_parser().parse_args(["train", "data", "--out", "run", *flags]))[1]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_cli_strategy_is_the_preset(name):
    assert _train("--strategy", name) == strategy_config(name, TrainConfig())


def test_cli_shorthands_and_default():
    assert _train() == strategy_config(DEFAULT_STRATEGY, TrainConfig())
    assert _train("--baseline") == _train("--strategy", "baseline")
    assert _train("--refine") == _train("--strategy", "refine")
    with pytest.raises(SystemExit):  # one strategy at a time
        build_parser().parse_args(["train", "data", "--out", "run", "--baseline", "--strategy", "comet"])


def test_the_bench_methods_and_the_app_labels_are_strategies():
    assert METHODS == tuple(STRATEGIES)
    assert set(STRATEGY_LABELS.values()) <= set(STRATEGIES)
    for label, name in STRATEGY_LABELS.items():  # the run listing names a preset's run by the app's label
        assert strategy_name(config_to_dict(STRATEGIES[name][0])) == label
        assert set(comet_parts(name)) <= {"soft_weights", "refine", "meta", "adaptive_l2"}

"""Speed/strength presets: one table read by the CLI, defaults equal to the config dataclasses', flags on top."""

from __future__ import annotations

import argparse

import pytest

from comet_studio.cli.model_options import add_model_options, configs_from_args
from comet_studio.core.config import ModelConfig, TrainConfig
from comet_studio.core.quality import DEFAULT_QUALITY, QUALITY, quality_configs


def test_the_default_preset_is_the_dataclass_defaults():
    assert quality_configs(DEFAULT_QUALITY) == (ModelConfig(), TrainConfig())


def test_presets_change_only_backbone_size_rounds_and_memories():
    base_model, base_train = ModelConfig(detector="flow"), TrainConfig(seed=3, steps_per_round=7)
    for name, preset in QUALITY.items():
        model, train = quality_configs(name, base_model, base_train)
        assert (model.backbone.name, model.backbone.image_size, train.rounds, model.memory.n_memories) == \
            (preset.backbone, preset.image_size, preset.rounds, preset.memories)
        assert model.detector == "flow" and train.seed == 3 and train.steps_per_round == 7
        assert model.memory.fraction == base_model.memory.fraction  # only the count changes
    # fast is faster for either kind of detector: a trained head's rounds, the memory ensemble's memories
    assert QUALITY["fast"].rounds < QUALITY["default"].rounds
    assert QUALITY["fast"].memories < QUALITY["default"].memories


def _parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    return configs_from_args(parser.parse_args(list(argv)))


def test_cli_quality_with_explicit_flags_on_top():
    model, train = _parse("--quality", "strong", "--image-size", "320")
    assert model.backbone.name == QUALITY["strong"].backbone and model.backbone.image_size == 320
    assert train.rounds == QUALITY["strong"].rounds
    model, train = _parse("--quality", "fast", "--rounds", "3", "--backbone", "efficientnet-lite0")
    assert train.rounds == 3 and model.backbone.name == "efficientnet-lite0"
    assert model.memory.n_memories == QUALITY["fast"].memories
    model, _ = _parse("--quality", "fast", "--set", "memory.n_memories=12")  # --set is applied on top
    assert model.memory.n_memories == 12
    assert _parse() == (ModelConfig(), TrainConfig())


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="choose from.*fast.*default.*strong"):
        quality_configs("turbo")

"""The detector registry (core/detectors/registry.py) is the one list of detectors; config, the CLI, the app
and the bench agree with it."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from comet_studio.cli.main import build_parser
from comet_studio.workflows.bench.grid import MODELS
from comet_studio.core.config import DETECTORS, ModelConfig
from comet_studio.core.detectors import build_head
from comet_studio.core.detectors.base import DetectorHead
from comet_studio.core.detectors.registry import REGISTRY, detector_names, detector_spec
from comet_studio.core.io.export import FORMATS


def test_config_lists_the_registered_detectors():
    # config.py keeps a literal tuple (it must not import the detectors); this keeps them equal.
    assert DETECTORS == tuple(REGISTRY)
    detector = {f.name: f for f in dataclasses.fields(ModelConfig)}["detector"]
    assert typing.get_args(typing.get_type_hints(ModelConfig)[detector.name]) == DETECTORS


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_entry_builds_its_head_from_its_settings(name):
    spec = detector_spec(name)
    config = ModelConfig(detector=name)
    assert isinstance(getattr(config, name), spec.config_class)  # ModelConfig.<name> holds its settings
    head = build_head(config, 32, (4, 4))
    assert isinstance(head, spec.head_class()) and isinstance(head, DetectorHead)
    assert spec.trains == head.trainable
    assert set(spec.exports) <= set(FORMATS)


def test_the_shells_offer_the_registered_detectors():
    assert MODELS == tuple(REGISTRY)
    assert build_parser().parse_args(["train", "d", "--out", "o", "--model", "patchcore"]).model == "patchcore"
    assert set(detector_names(trains=False)) == {"memory", "patchcore"}
    assert set(detector_names(trains=True)) | set(detector_names(trains=False)) == set(REGISTRY)
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        detector_spec("nope")

"""The detector registry (core/detectors/registry.py) is the one list of detectors; config, the CLI, the app
and the bench agree with it."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

import numpy as np
import pytest

from comet_studio.cli.main import build_parser
from comet_studio.workflows.bench.grid import MODELS, BenchConfig
from comet_studio.core.config import DETECTORS, ModelConfig
from comet_studio.core.detectors import build_head
from comet_studio.core.detectors.base import DetectorHead
from comet_studio.core.detectors.registry import REGISTRY, detector_names, detector_spec
from comet_studio.core.io.export import FORMATS


def test_config_lists_the_registered_detectors():
    assert DETECTORS == tuple(REGISTRY)
    assert typing.get_args(typing.get_type_hints(ModelConfig)["detector"]) == DETECTORS
    sections = [f.name for f in dataclasses.fields(ModelConfig)]
    assert sections[1:2 + len(REGISTRY)] == ["backbone", *REGISTRY]  # one settings section per detector
    with pytest.raises(ValueError, match="detector must be one of"):
        ModelConfig(detector="nope")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_entry_builds_its_head_from_its_settings(name):
    spec = detector_spec(name)
    config = ModelConfig(detector=name)
    assert isinstance(getattr(config, name), spec.config_class)  # ModelConfig.<name> holds its settings
    head = build_head(config, 32, (4, 4))
    assert isinstance(head, spec.head_class) and isinstance(head, DetectorHead)
    assert spec.trains == head.trainable
    assert set(spec.exports) <= set(FORMATS)


def test_the_shells_offer_the_registered_detectors():
    assert MODELS == tuple(REGISTRY)
    assert build_parser().parse_args(["train", "d", "--out", "o", "--model", "patchcore"]).model == "patchcore"
    assert set(detector_names(trains=False)) == {"memory", "patchcore"}
    assert set(detector_names(trains=True)) | set(detector_names(trains=False)) == set(REGISTRY)
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        detector_spec("nope")


# A detector written the way the registry's docstring says: one module in core/detectors/ ...
TOY_MODULE = '''
"""A per-channel Gaussian over the training patches: patch score = mean squared z-score."""
from __future__ import annotations
from dataclasses import dataclass
import torch
from ..validation import check_range
from .base import DetectorHead


@dataclass(frozen=True, kw_only=True)
class GaussConfig:
    top_k: float = 0.05

    def __post_init__(self) -> None:
        check_range("top_k", self.top_k, 0.0, 1.0)


class GaussHead(DetectorHead):
    trainable = False

    def __init__(self, dim, config, *, generator=None):
        super().__init__()
        self.top_k = config.top_k
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))

    def fit_statistics(self, features):
        patches = features.permute(1, 0, 2, 3).flatten(1)
        self.mean.copy_(patches.mean(1))
        self.var.copy_(patches.var(1) + 1e-6)

    def patch_scores(self, features):
        return ((features - self.mean[:, None, None]) ** 2 / self.var[:, None, None]).mean(1)

    def training_scores(self, features, *, progress=None):
        return self.image_scores(features)  # in-sample: a toy; a real memory leaves each image out
'''
# ... and one registry entry.
TOY_ENTRY = '    DetectorSpec("gauss", GaussConfig, GaussHead, "per-channel Gaussian (a test detector)"),\n'

TOY_CHECK = '''
import sys
from pathlib import Path
import numpy as np
import comet_studio
assert Path(comet_studio.__file__).parent == Path(sys.argv[1]), comet_studio.__file__  # the copy runs
from comet_studio.cli.main import build_parser
from comet_studio.core import AnomalyModel, BackboneConfig, ModelConfig, TrainConfig
from comet_studio.core.config import config_to_dict, with_settings
from comet_studio.core.detectors.gauss import GaussConfig
from comet_studio.workflows.bench.grid import MODELS, BenchConfig

config = ModelConfig(detector="gauss", backbone=BackboneConfig(image_size=64), gauss=GaussConfig(top_k=0.1))
assert config_to_dict(config)["gauss"] == {"top_k": 0.1}
assert with_settings(config, {"gauss.top_k": 0.2}).gauss.top_k == 0.2
assert build_parser().parse_args(["train", "d", "--out", "o", "--model", "gauss"]).model == "gauss"
assert "gauss" in MODELS
train, test = sys.argv[2].split(","), sys.argv[3].split(",")
model = AnomalyModel(config, train=TrainConfig(device="cpu")).fit(train)
before = model.predict(test).image_score
loaded = AnomalyModel.load(model.save(Path(sys.argv[4]) / "model"), device="cpu")
assert loaded.config == config
assert np.array_equal(loaded.predict(test).image_score, before)
print("scores", *before)
'''


def test_a_new_detector_is_one_module_and_one_registry_entry(tmp_path):
    """A copy of the package with exactly those two additions trains, scores, saves and loads the new detector,
    and the config (its section, JSON and dotted settings), the CLI's --model and the bench offer it."""
    import shutil
    import subprocess
    import sys

    import comet_studio
    from tests.conftest import MAGNETIC, good_tiles

    package = tmp_path / "src" / "comet_studio"
    shutil.copytree(Path(comet_studio.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "core" / "detectors" / "gauss.py").write_text(TOY_MODULE)
    registry = package / "core" / "detectors" / "registry.py"
    source = registry.read_text()
    anchor = "from .base import DetectorHead\n"
    source = source.replace(anchor, anchor + "from .gauss import GaussConfig, GaussHead\n")
    anchor = '    DetectorSpec("patchcore",'
    source = source.replace(anchor, TOY_ENTRY + anchor)
    registry.write_text(source)

    train = ",".join(str(p) for p in good_tiles(6))
    test = ",".join(str(sorted((MAGNETIC / "test" / d).glob("*.jpg"))[0]) for d in ("good", "blowhole"))
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    done = subprocess.run([sys.executable, "-c", TOY_CHECK, str(package), train, test, str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = [float(s) for s in done.stdout.split("scores", 1)[1].split()]
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_each_detector_gets_its_own_edge_padding_unless_the_config_names_one():
    from comet_studio.core.config import BackboneConfig

    for name, spec in REGISTRY.items():  # chosen leave-one-set-out per detector (README, "Edge patches")
        assert ModelConfig(detector=name).backbone.pool_padding == spec.pool_padding
    assert REGISTRY["memory"].pool_padding == REGISTRY["patchcore"].pool_padding == "zeros"
    assert REGISTRY["simplenet"].pool_padding == "inside"
    named = ModelConfig(detector="memory", backbone=BackboneConfig(pool_padding="inside"))
    assert named.backbone.pool_padding == "inside"  # a setting the user names is kept
    bench = BenchConfig(models=("simplenet", "memory"))
    assert bench.backbone_config("memory") != bench.backbone_config("simplenet")  # cached apart

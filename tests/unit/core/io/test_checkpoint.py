"""Checkpoint hygiene: a checkpoint that is edited, truncated, incomplete or from another version fails
with a CheckpointError that says why, never with a shape error; writes leave no partial files."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig
from comet_studio.core.io import CheckpointError, read_checkpoint, write_checkpoint_file
from tests.conftest import TINY, good_tiles


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    model = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=TINY))
    train = TrainConfig(rounds=1, steps_per_round=2, batch_size=4, device="cpu", comet=CoMetConfig(task_size=4))
    directory = tmp_path_factory.mktemp("checkpoint") / "model"
    AnomalyModel(model, train=train).fit(good_tiles(8)).save(directory)
    return directory


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    """A fresh copy of the saved model folder, for each test to break."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _edit_config(directory: Path, edit) -> None:
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _load(directory: Path) -> AnomalyModel:
    return AnomalyModel.load(directory, device="cpu")


def test_save_is_atomic_and_loads(saved, copy):
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "model.safetensors"]  # no temp files
    model = _load(copy)
    model.save(copy)  # overwriting an existing checkpoint in place
    assert sorted(p.name for p in copy.iterdir()) == ["model.json", "model.safetensors"]
    assert _load(copy).threshold_ == pytest.approx(model.threshold_)


def test_saved_files_get_the_users_normal_permissions(saved):
    # safetensors creates its file 0600; a model folder shared with a server or a colleague must not be.
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.json", "model.safetensors"):
        assert stat.S_IMODE((saved / name).stat().st_mode) == 0o666 & ~umask, name


def test_other_format_version(copy):
    _edit_config(copy, lambda meta: meta.update(format_version=99))
    with pytest.raises(CheckpointError, match="format version 99; this comet-studio reads version 1"):
        _load(copy)
    _edit_config(copy, lambda meta: meta.pop("format_version"))
    with pytest.raises(CheckpointError, match="format version None"):
        _load(copy)


def test_changed_backbone(copy):
    _edit_config(copy, lambda meta: meta["model"]["backbone"].update(name="efficientnet-lite2"))
    with pytest.raises(CheckpointError, match=r"saved for features of dim 152 .* gives dim 168"):
        _load(copy)
    _edit_config(copy, lambda meta: meta["model"]["backbone"].update(name="resnet18"))
    with pytest.raises(CheckpointError, match="model config cannot be read .*backbone must be one of"):
        _load(copy)


def test_changed_feature_dim(copy):
    _edit_config(copy, lambda meta: meta["model"]["backbone"].update(feature_dim=64))
    with pytest.raises(CheckpointError, match=r"saved for features of dim 152 .* gives dim 64"):
        _load(copy)


def test_changed_layers(copy):
    _edit_config(copy, lambda meta: meta["model"]["backbone"].update(layers=["block3", "block9"]))
    with pytest.raises(CheckpointError, match=r"from layers \['block4', 'block10'\]"):
        _load(copy)


def test_config_key_from_a_newer_version(copy):
    _edit_config(copy, lambda meta: meta["model"].update(new_option=True))
    with pytest.raises(CheckpointError, match=r"unknown keys \['new_option'\]"):
        _load(copy)


def test_truncated_weights(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot be read .*truncated"):
        _load(copy)


def test_deleted_or_reshaped_tensor(copy):
    weights = copy / "model.safetensors"
    tensors = load_file(str(weights))
    removed = tensors.pop("head.adaptor.bias")
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=r"missing \['adaptor.bias'\].*retrain"):
        _load(copy)
    tensors["head.adaptor.bias"] = removed[:-1].clone()
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=r"wrong shape \['adaptor.bias'\]"):
        _load(copy)


def test_missing_files_and_foreign_files(copy, tmp_path):
    with pytest.raises(CheckpointError, match="no model in"):
        read_checkpoint(tmp_path / "nowhere")
    (copy / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint(copy)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": load_file(str(copy / "model.safetensors"))["post.threshold"]}, str(plain))
    with pytest.raises(CheckpointError, match="not written by comet-studio export"):
        read_checkpoint(plain)
    with pytest.raises(CheckpointError, match="is not a model"):
        read_checkpoint(copy / "model.json")


def test_single_file_checkpoint_has_the_same_checks(saved, tmp_path):
    tensors, meta = read_checkpoint(saved)
    path = write_checkpoint_file(tmp_path / "model.safetensors", tensors, meta)
    assert _load(path).threshold_ == pytest.approx(meta["threshold"])
    path = tmp_path / "old.safetensors"  # the writer always stamps the current version: forge an old file
    save_file(tensors, str(path), metadata={"comet_studio": json.dumps({**meta, "format_version": 0})})
    with pytest.raises(CheckpointError, match="format version 0"):
        _load(path)


def test_a_model_saved_before_pool_padding_existed_keeps_its_own_features(copy):
    """Files from before a setting existed lack its key: they load with the value they were made with
    (``BackboneConfig.LEGACY``), not today's default, so an older model scores exactly as it did."""
    _edit_config(copy, lambda meta: meta["model"]["backbone"].update(pool_padding="inside"))
    inside = _load(copy)
    _edit_config(copy, lambda meta: meta["model"]["backbone"].update(pool_padding="zeros"))
    assert _load(copy).config.backbone.pool_padding == "zeros"  # a saved value is kept whatever the default
    _edit_config(copy, lambda meta: meta["model"]["backbone"].pop("pool_padding"))
    older = _load(copy)
    assert older.config.backbone.pool_padding == BackboneConfig.LEGACY["pool_padding"] == "inside"
    images = good_tiles(2, offset=8)
    assert (older.predict(images).raw_score == inside.predict(images).raw_score).all()

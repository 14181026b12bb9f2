"""The CoMet trainer on real images: planted defects get the lowest weights, seeded runs repeat exactly,
training stops cleanly between steps, and a saved model predicts exactly like the trained one."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, NotFittedError, TrainConfig
from comet_studio.core.data import scan_folder
from comet_studio.core.evaluation import rejection_quality
from comet_studio.core.io import CheckpointError
from comet_studio.workflows.run import read_samples, train_run

SIZE = 128
MODEL = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=SIZE))


def _train(rounds=4, steps=6, comet=None, seed=0):
    # CoMet's own mechanics, without the memory's first opinion (tests/unit/core/training/test_trust.py covers that).
    return TrainConfig(rounds=rounds, steps_per_round=steps, comet=comet or CoMetConfig(), seed=seed, device="cpu",
                       prior="none")


@pytest.fixture(scope="module")
def planted(planted_folder):
    root, planted_paths = planted_folder
    folder = scan_folder(root)
    features = AnomalyModel(MODEL, train=_train()).extract(folder.paths)
    mask = np.array([p in planted_paths for p in folder.paths])
    return folder, features, mask


@pytest.mark.parametrize("comet", [CoMetConfig(), CoMetConfig.refinement()], ids=["comet", "refine"])
def test_planted_defects_get_the_lowest_weights(planted, comet):
    folder, features, mask = planted
    model = AnomalyModel(MODEL, train=_train(comet=comet)).fit(folder.paths, features=features)
    result = model.result_
    quality = rejection_quality(mask, result.weights, result.scores, result.rejected)
    assert quality["planted_in_lowest"] == 1.0
    assert result.weights[mask].max() < 1.0  # every planted image is down-weighted...
    assert np.median(result.weights[~mask]) == 1.0  # ...and the typical good one is not
    if comet.refine:
        assert quality["rejection_recall"] == 1.0 and quality["rejection_precision"] >= 0.5
    # the weights went to the right images: the lowest-weight paths are the planted files
    order = np.lexsort((-result.scores, result.weights))  # lowest weight first, then highest score
    lowest = [folder.paths[i] for i in order[: mask.sum()]]
    assert all("zz_defect" in p for p in lowest)


def test_same_seed_same_result_other_seed_differs(planted):
    folder, features, _ = planted
    runs = [AnomalyModel(MODEL, train=_train(rounds=2, steps=2, seed=s)).fit(folder.paths, features=features)
            for s in (7, 7, 8)]
    assert np.array_equal(runs[0].result_.scores, runs[1].result_.scores)
    assert np.array_equal(runs[0].result_.weights, runs[1].result_.weights)
    assert not np.array_equal(runs[0].result_.scores, runs[2].result_.scores)


def test_round_events_and_adaptive_lambda(planted):
    folder, features, _ = planted
    events = []
    AnomalyModel(MODEL, train=_train(rounds=3, steps=3)).fit(folder.paths, features=features,
                                                               callback=events.append)
    assert [e.round for e in events] == [0, 1, 2]
    for e in events:
        assert np.isfinite(e.train_loss) and np.isfinite(e.val_loss) and np.isfinite(e.threshold)
        assert e.scores.shape == e.weights.shape == (len(folder),)
        assert e.lam >= CoMetConfig().l2_base
    baseline = []
    AnomalyModel(MODEL, train=_train(rounds=2, steps=4, comet=CoMetConfig.baseline())).fit(
        folder.paths, features=features, callback=baseline.append)
    assert all(np.all(e.weights == 1.0) for e in baseline)  # plain baseline: no weighting at all
    assert all(e.lam == CoMetConfig().l2_base for e in baseline)


def test_overrides_are_honoured(planted):
    folder, features, mask = planted
    forced = int(np.flatnonzero(mask)[0])
    model = AnomalyModel(MODEL, train=_train(rounds=2, steps=4)).fit(
        folder.paths, features=features, overrides={forced: "good", 0: "exclude"})
    assert model.result_.weights[forced] == 1.0
    assert model.result_.weights[0] == 0.0 and model.result_.rejected[0]


def test_stop_between_steps_keeps_a_loadable_model(planted_folder, tmp_path):
    root, _ = planted_folder
    stop = threading.Event()

    def on_round(event):
        if event.round == 0:
            stop.set()

    run = train_run(root, tmp_path / "run", MODEL, _train(rounds=10), callback=on_round, stop=stop)
    assert run.stopped
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 1
    loaded = AnomalyModel.load(tmp_path / "run", device="cpu")
    rows = read_samples(tmp_path / "run")
    assert len(rows) == len(run.folder)
    assert np.isfinite(loaded.predict(run.folder.paths[:2]).image_score).all()


def test_save_load_gives_identical_predictions(planted, tmp_path):
    folder, features, _ = planted
    model = AnomalyModel(MODEL, train=_train(rounds=1, steps=3)).fit(folder.paths, features=features)
    before = model.predict(folder.paths[:4])
    model.save(tmp_path / "m")
    loaded = AnomalyModel.load(tmp_path / "m", device="cpu")
    after = loaded.predict(folder.paths[:4])
    assert np.allclose(before.image_score, after.image_score, atol=1e-6)
    assert np.allclose(before.anomaly_map, after.anomaly_map, atol=1e-5)
    assert after.anomaly_map.shape == (4, SIZE, SIZE)
    assert np.array_equal(after.pred_label, after.image_score > 0.5)


def test_predict_before_fit_and_bad_checkpoints(tmp_path, planted):
    folder, features, _ = planted
    with pytest.raises(NotFittedError, match="call fit"):
        AnomalyModel(MODEL).predict(folder.paths[:1])
    with pytest.raises(CheckpointError, match="no model in"):
        AnomalyModel.load(tmp_path)
    model = AnomalyModel(MODEL, train=_train(rounds=1, steps=2)).fit(folder.paths, features=features)
    model.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["simplenet"]["hidden_dim"] = 64  # a config that no longer matches the weights
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match its config"):
        AnomalyModel.load(tmp_path / "m", device="cpu")
    meta["format_version"] = 0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version"):
        AnomalyModel.load(tmp_path / "m", device="cpu")


def test_features_are_extracted_once_per_fit(planted, monkeypatch):
    """The frozen backbone runs once per image; training steps reuse the cache."""
    folder, _, _ = planted
    model = AnomalyModel(MODEL, train=_train(rounds=2, steps=3))
    extractor = model._extractor()
    calls = []
    original = extractor.forward
    monkeypatch.setattr(extractor, "forward", lambda x: calls.append(len(x)) or original(x))
    model.fit(folder.paths)
    assert sum(calls) == len(folder)
    assert torch.equal(model.features_, model.features_)  # kept for retraining with overrides

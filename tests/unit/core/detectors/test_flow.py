"""The FrEIA flow head on real magnetic-tile features: the INN inverts exactly, only floating trainable tensors
are trained (never FrEIA's fixed permutations), the NLL falls with training, checkpoints restore the
permutations, and painted defects score above the typical training image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from comet_studio.cli.main import main as cli
from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig
from comet_studio.core.config import FlowConfig
from comet_studio.core.data import scan_folder
from comet_studio.core.detectors import build_head
from comet_studio.core.detectors.flow import FlowHead
from comet_studio.core.training import CoMetTrainer, TrainingControl

from tests.conftest import TINY, good_tiles

CONFIG = FlowConfig(n_blocks=2, hidden_ratio=0.5)  # small and fast; the defaults are tuned in the report
MODEL = ModelConfig(detector="flow", backbone=BackboneConfig(image_size=TINY), flow=CONFIG)


def _train(rounds: int = 3, steps: int = 8, seed: int = 0, comet: CoMetConfig | None = None) -> TrainConfig:
    return TrainConfig(rounds=rounds, steps_per_round=steps, seed=seed, device="cpu", comet=comet or CoMetConfig())


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    """(16, D, 8, 8) features of 16 real good tiles at 64 px."""
    return AnomalyModel(MODEL, train=TrainConfig(device="cpu")).extract(good_tiles(16))


def _head(features: torch.Tensor, seed: int = 0, config: FlowConfig = CONFIG) -> FlowHead:
    head = FlowHead(features.shape[1], config, generator=torch.Generator().manual_seed(seed))
    head.fit_statistics(features)
    return head


def _fit_steps(head: FlowHead, features: torch.Tensor, steps: int) -> list[float]:
    optimiser = torch.optim.Adam(head.trainable_parameters(), lr=head.config.learning_rate)
    losses = []
    for _ in range(steps):
        loss = head.per_sample_loss(features).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def _permutations(head: FlowHead) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in head.named_parameters() if "w_perm" in name}


def test_build_head_dispatches_to_flow(features):
    head = build_head(MODEL, features.shape[1], tuple(features.shape[-2:]))
    assert isinstance(head, FlowHead) and len(head.flow) == MODEL.flow.n_blocks
    assert head.top_k == MODEL.flow.top_k


def test_round_trip_x_to_z_to_x(features):
    head = _head(features)
    _fit_steps(head, features, 5)  # the zero-initialised couplings start as the identity: move them first
    with torch.no_grad():
        x = head._standardise(features[:4])
        z, log_det = head.flow(x)
        back, log_det_rev = head.flow(z, rev=True)
    assert not torch.allclose(z, x, atol=1e-3)  # the flow is not the identity any more...
    torch.testing.assert_close(back, x, atol=1e-4, rtol=1e-4)  # ...and still inverts exactly
    torch.testing.assert_close(log_det_rev, -log_det, atol=1e-3, rtol=1e-4)


def test_trainable_parameters_exclude_the_fixed_permutations(features):
    head = _head(features)
    trainable = head.trainable_parameters()
    assert trainable and all(p.requires_grad and p.is_floating_point() for p in trainable)
    ids = {id(p) for p in trainable}
    permutations = [p for name, p in head.named_parameters() if "w_perm" in name]
    assert len(permutations) == 2 * CONFIG.n_blocks
    assert not any(id(p) in ids for p in permutations)
    assert len(trainable) == len(list(head.parameters())) - len(permutations)
    for p in permutations:  # hard permutation matrices, drawn from torch's RNG
        matrix = p.detach().squeeze()
        assert torch.equal(matrix.sum(0), torch.ones(len(matrix))) and torch.equal(matrix.sum(1), torch.ones(len(matrix)))
    torch.testing.assert_close(_permutations(_head(features, seed=0)), _permutations(head))  # seeded


def test_per_sample_loss_is_per_image_and_falls_with_training(features):
    head = _head(features)
    first = head.per_sample_loss(features)
    assert first.shape == (len(features),) and torch.isfinite(first).all()
    assert abs(float(first.detach().mean())) < 5  # divided by D: O(1), not O(D)
    losses = _fit_steps(head, features, 15)
    assert losses[-1] < losses[0] - 0.05
    scores = head.patch_scores(features)
    assert scores.shape == (len(features), *features.shape[-2:]) and (scores >= 0).all()
    assert head.image_scores(features).shape == (len(features),)


def test_wrong_feature_shape_is_a_clear_error(features):
    head = _head(features)
    with pytest.raises(ValueError, match=r"expected features \(B, \d+, h, w\)"):
        head.patch_scores(features[:, :-1])
    with pytest.raises(ValueError, match="dim >= 2"):
        FlowHead(1, CONFIG)


def test_state_dict_restores_permutations_built_under_another_seed(features):
    trained = _head(features, seed=0)
    _fit_steps(trained, features, 5)
    other = _head(features, seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(_permutations(trained).values(),
                                                     _permutations(other).values()))
    other.load_state_dict(trained.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(other.patch_scores(features), trained.patch_scores(features))


def test_comet_trainer_with_meta_and_adaptive_l2_leaves_permutations_alone(features):
    head = _head(features)
    before = _permutations(head)
    weights_before = [p.detach().clone() for p in head.trainable_parameters()]
    comet = CoMetConfig(meta=True, adaptive_l2=True, soft_weights=True, task_size=6)
    events = []
    result = CoMetTrainer(_train(rounds=3, steps=4, comet=comet)).fit(
        head, features, device=torch.device("cpu"), control=TrainingControl(on_round=events.append))
    assert len(events) == 3 and all(np.isfinite(e.train_loss) and e.lam >= comet.l2_base for e in events)
    assert np.isfinite(result.scores).all() and result.scores.shape == (len(features),)
    torch.testing.assert_close(_permutations(head), before, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(head.trainable_parameters(), weights_before))


def test_saved_and_loaded_model_scores_identically(features, tmp_path):
    paths = [str(p) for p in good_tiles(16)]
    # Trained under seed 5; the loaded head is built under seed 0 (other permutations): the checkpoint must win.
    model = AnomalyModel(MODEL, train=_train(rounds=1, steps=4, seed=5)).fit(paths, features=features)
    model.save(tmp_path / "model")
    loaded = AnomalyModel.load(tmp_path / "model", device="cpu")
    a, b = model.predict_features(features), loaded.predict_features(features)
    assert np.array_equal(a.raw_score, b.raw_score) and np.array_equal(a.anomaly_map, b.anomaly_map)
    torch.testing.assert_close(_permutations(loaded.inference_.head), _permutations(model.inference_.head),
                               rtol=0, atol=0)


def test_planted_defects_score_above_the_median_training_image(planted_folder):
    root, planted = planted_folder
    folder = scan_folder(root)
    model = AnomalyModel(MODEL, train=_train(rounds=3, steps=8)).fit(folder.paths)
    scores = model.result_.scores
    mask = np.array([p in planted for p in folder.paths])
    assert scores[mask].min() > np.median(scores[~mask])


def test_cli_train_predict_evaluate_with_flow(tiny_mvtec, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["train", str(tiny_mvtec), "--out", str(run), "--model", "flow", "--image-size", str(TINY),
                "--epochs", "2", "--steps", "4", "--device", "cpu", "--set", "flow.n_blocks=2",
                "--set", "flow.hidden_ratio=0.5", "--set", "comet.task_size=4"]) == 0
    saved = json.loads((run / "model" / "model.json").read_text())["model"]
    assert saved["detector"] == "flow" and saved["flow"]["n_blocks"] == 2 and saved["flow"]["hidden_ratio"] == 0.5
    assert json.loads((run / "run.json").read_text())["train"]["comet"]["task_size"] == 4
    assert cli(["predict", str(run), str(tiny_mvtec / "test" / "crack"), "--out", str(tmp_path / "pred"),
                "--device", "cpu", "--no-heatmaps"]) == 0
    assert cli(["evaluate", str(run), str(tiny_mvtec), "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 12 and 0.0 <= metrics["image_auroc"] <= 1.0


@pytest.mark.parametrize("setting, message", [
    ("flow.blocks=8", "no setting 'blocks'"),  # a typo names the settings there are
    ("flows.n_blocks=8", "no section 'flows'"),
    ("flow.n_blocks=0", "n_blocks must be in"),  # the config's own validation
    ("flow.n_blocks", "expected SECTION.KEY=VALUE"),
])
def test_cli_set_refuses_a_bad_setting_before_any_work(tiny_mvtec, tmp_path, capsys, setting, message):
    assert cli(["train", str(tiny_mvtec), "--out", str(tmp_path / "run"), "--model", "flow", "--device", "cpu",
                "--set", setting]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()

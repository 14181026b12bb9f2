"""Patch memories on real images: leave-one-image-out scoring, the contamination prior, seeds, checkpoints,
fp16 storage, the training-free trainer path (with refinement) and the PatchCore coreset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig
from comet_studio.core.config import MemoryConfig, PatchCoreConfig, TrustConfig
from comet_studio.core.data import scan_folder
from comet_studio.core.detectors import build_head
from comet_studio.core.detectors.memory import MemoryHead, memory_prior_scores
from comet_studio.core.detectors.nearest import flat_patches, nearest_distance
from comet_studio.core.detectors.patchcore import PatchCoreHead, greedy_coreset
from comet_studio.core.evaluation import image_auroc
from comet_studio.workflows.run import train_run
from comet_studio.core.training import CoMetTrainer
from comet_studio.core.training.weighting import confidence_weights

from tests.conftest import COOKIES, TINY

SIZE = 128


def _extract(paths, size: int = SIZE) -> torch.Tensor:
    model = AnomalyModel(ModelConfig(backbone=BackboneConfig(image_size=size)), train=TrainConfig(device="cpu"))
    return model.extract(paths)


@pytest.fixture(scope="module")
def planted(planted_folder):
    """Features of 24 good magnetic tiles + 3 painted defects (11% contamination), and the defect mask."""
    root, planted_paths = planted_folder
    paths = scan_folder(root).paths
    return paths, _extract(paths), np.array([p in planted_paths for p in paths])


def _lowest_weight_order(scores: np.ndarray) -> np.ndarray:
    """Images from lowest confidence weight up; equal weights: higher score first."""
    return np.lexsort((-scores, confidence_weights(scores).weights))


def test_nearest_distance_matches_brute_force_in_blocks():
    generator = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(37, 5, generator=generator), torch.randn(53, 5, generator=generator)
    query_owner, bank_owner = torch.arange(37) % 4, torch.arange(53) % 4
    full = torch.cdist(queries, bank)
    assert torch.allclose(nearest_distance(queries, bank, block=64), full.min(1).values, atol=1e-5)
    full[query_owner[:, None] == bank_owner[None, :]] = math.inf
    got = nearest_distance(queries, bank.half(), query_owner=query_owner, bank_owner=bank_owner, block=50)
    assert torch.allclose(got, full.min(1).values, atol=1e-2)


def test_a_defect_planted_once_scores_like_an_unseen_one(planted):
    _, features, mask = planted
    goods, defect = features[~mask], features[np.flatnonzero(mask)[:1]]
    config = MemoryConfig()
    unseen_head = MemoryHead(features.shape[1], config, seed=0)
    unseen_head.fit_statistics(goods)
    unseen = float(unseen_head.image_scores(defect))

    training = torch.cat([goods, defect])
    head = MemoryHead(features.shape[1], config, seed=0)
    head.fit_statistics(training)
    loo = head.training_scores(training).numpy()
    assert abs(loo[-1] - unseen) < 0.15 * unseen
    assert loo[-1] > 1.3 * np.median(loo[:-1])


def test_leave_one_out_masks_exactly_the_own_patches(planted):
    """With every patch stored, a training image's own patches would give it a score of 0."""
    _, features, _ = planted
    head = MemoryHead(features.shape[1], MemoryConfig(n_memories=1, fraction=1.0), seed=0)
    head.fit_statistics(features[:6])
    assert float(head.image_scores(features[:1])) < 0.2  # float32 rounding; real scores are ~30-60
    loo = head.training_scores(features[:6])
    others = MemoryHead(features.shape[1], MemoryConfig(n_memories=1, fraction=1.0), seed=0)
    others.fit_statistics(features[1:6])
    assert float(loo[0]) == pytest.approx(float(others.image_scores(features[:1])), rel=1e-4)


def test_prior_gives_planted_defects_the_lowest_weights(planted):
    _, features, mask = planted
    prior = memory_prior_scores(features, MemoryConfig(), seed=0)
    lowest = _lowest_weight_order(prior)[:mask.sum()]
    assert mask[lowest].sum() >= math.ceil(0.8 * mask.sum())


def test_prior_ranks_real_cookie_defects_high():
    """31 good cookies + 3 broken ones from test/anomaly: the leave-one-out prior alone ranks them high,
    before any training (one unusual good photo, with the oven tray in view, also ranks high)."""
    goods = sorted((COOKIES / "train" / "good").glob("*.jpg"))
    defects = sorted((COOKIES / "test" / "anomaly").glob("*.jpg"))[3:6]
    features = _extract([str(p) for p in goods + defects])
    prior = memory_prior_scores(features, MemoryConfig(), seed=0)
    mask = np.arange(len(prior)) >= len(goods)
    assert image_auroc(mask.astype(int), prior) >= 0.85
    lowest = _lowest_weight_order(prior)[:2 * mask.sum()]
    assert mask[lowest].sum() >= math.ceil(0.8 * mask.sum())


def test_same_seed_same_memories(planted):
    _, features, _ = planted
    heads = [MemoryHead(features.shape[1], MemoryConfig(n_memories=3), seed=s) for s in (1, 1, 2)]
    for head in heads:
        head.fit_statistics(features)
    assert torch.equal(heads[0].memory, heads[1].memory) and torch.equal(heads[0].owner, heads[1].owner)
    assert not torch.equal(heads[0].memory, heads[2].memory)
    assert not torch.equal(heads[0].memory[0], heads[0].memory[1])  # the memories differ from each other
    n, _, h, w = features.shape
    assert heads[0].memory.shape == (3, math.ceil(0.1 * n * h * w), features.shape[1])


def test_fp16_storage_scores_like_fp32(planted):
    _, features, _ = planted
    heads = [MemoryHead(features.shape[1], MemoryConfig(fp16=fp16), seed=0) for fp16 in (False, True)]
    for head in heads:
        head.fit_statistics(features)
    assert heads[1].memory.dtype == torch.float16
    full, half = (head.patch_scores(features[:4]) for head in heads)
    assert torch.allclose(full, half, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("detector", ["memory", "patchcore"])
def test_save_load_gives_identical_scores(planted_folder, tmp_path, detector):
    root, _ = planted_folder
    paths = scan_folder(root).paths
    config = ModelConfig(detector=detector, backbone=BackboneConfig(image_size=TINY),
                         memory=MemoryConfig(n_memories=2, fp16=True))
    model = AnomalyModel(config, train=TrainConfig(device="cpu")).fit(paths)
    before = model.predict(paths[:5])
    loaded = AnomalyModel.load(model.save(tmp_path / "model"), device="cpu")
    after = loaded.predict(paths[:5])
    np.testing.assert_array_equal(before.raw_score, after.raw_score)
    np.testing.assert_array_equal(before.anomaly_map, after.anomaly_map)
    assert after.anomaly_map.shape == (5, TINY, TINY)


def test_loading_a_memory_of_another_width_fails_clearly():
    head = MemoryHead(16, MemoryConfig(n_memories=2), seed=0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        head.load_state_dict({"memory": torch.zeros(2, 10, 8), "owner": torch.zeros(2, 10, dtype=torch.int32)})
    with pytest.raises(RuntimeError, match="empty memory"):
        head.patch_scores(torch.zeros(1, 16, 2, 2))


@pytest.mark.parametrize("comet", [CoMetConfig(), CoMetConfig.refinement()], ids=["soft", "refine"])
def test_training_free_fit_scores_training_images_leave_one_out(planted, comet):
    paths, features, mask = planted
    config = ModelConfig(detector="memory", backbone=BackboneConfig(image_size=SIZE))
    # The memory's own refinement loop, without the first opinion (tests/unit/core/training/test_trust.py covers that).
    model = AnomalyModel(config, train=TrainConfig(comet=comet, device="cpu", prior="none"))
    result = model.fit(paths, features=features).result_
    assert result.history
    # The planted defects score highest (they share one painted pattern, so each still finds its twins).
    assert mask[np.argsort(-result.scores)[:mask.sum()]].sum() >= mask.sum() - 1
    # Images in the final memory were scored leave-one-out, the others normally.
    head, kept = model.inference_.head, np.flatnonzero(~result.rejected)
    np.testing.assert_allclose(result.scores[kept], head.training_scores(features[kept]).numpy(), rtol=1e-5)
    if result.rejected.any():
        out = result.rejected
        np.testing.assert_allclose(result.scores[out], model.predict_features(features[out]).raw_score, rtol=1e-5)
    if comet.refine:
        # Once one copy of the painted defect is rejected the others stand out: all are left out of the
        # final memory, and few good images with them.
        assert result.rejected[mask].all() and result.rejected[~mask].sum() <= 2
        n, _, h, w = features.shape
        kept = n - int(result.rejected.sum())
        assert head.memory.shape[1] == math.ceil(0.1 * kept * h * w)


def test_excluded_images_stay_out_of_the_memory(planted):
    paths, features, mask = planted
    excluded = {int(i): "exclude" for i in np.flatnonzero(mask)}
    config = ModelConfig(detector="memory", backbone=BackboneConfig(image_size=SIZE),
                         memory=MemoryConfig(n_memories=4))
    model = AnomalyModel(config, train=TrainConfig(device="cpu", prior="none"))  # only the overrides exclude
    result = model.fit(paths, features=features, overrides=excluded).result_
    n, _, h, w = features.shape
    assert model.inference_.head.memory.shape[1] == math.ceil(0.1 * (n - len(excluded)) * h * w)
    assert result.rejected[mask].all() and (result.weights[mask] == 0).all()


def test_prior_blend_one_keeps_the_prior_weights(planted):
    _, features, mask = planted
    prior = memory_prior_scores(features, MemoryConfig(n_memories=2), seed=0)
    config = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=SIZE))
    head = build_head(config, features.shape[1], tuple(features.shape[2:]))
    train = TrainConfig(rounds=1, steps_per_round=1, device="cpu", trust=TrustConfig(mode="blend"),
                        comet=CoMetConfig(meta=False, warmup_rounds=0, prior_blend=1.0))
    result = CoMetTrainer(train).fit(head, features, device=torch.device("cpu"), prior_scores=prior)
    np.testing.assert_allclose(result.weights, confidence_weights(prior).weights)
    # The decision threshold stays on the detector's own scale.
    assert result.threshold == pytest.approx(confidence_weights(result.scores).threshold)


def test_train_run_with_the_memory_prior_starts_from_the_prior_weights(planted_folder, planted, tmp_path):
    """The app/CLI path: ``train_run`` with ``prior="memory"`` and no scores given; ``AnomalyModel.fit``
    computes the prior from ``TrainConfig`` and hands it to the trainer (blend 1: the weights are the prior's)."""
    root, _ = planted_folder
    _, features, mask = planted
    config = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=SIZE),
                         memory=MemoryConfig(n_memories=2))
    train = TrainConfig(rounds=1, steps_per_round=1, device="cpu", prior="memory", seed=3,
                        trust=TrustConfig(mode="blend"),
                        comet=CoMetConfig(meta=False, warmup_rounds=0, prior_blend=1.0))
    result = train_run(root, tmp_path / "run", config, train, features=features).model.result_
    prior = memory_prior_scores(features, config.memory, seed=3)
    np.testing.assert_allclose(result.weights, confidence_weights(prior).weights)
    assert mask[_lowest_weight_order(prior)[:mask.sum()]].all()


def test_patchcore_coreset_is_deterministic_and_sized(planted):
    _, features, _ = planted
    heads = [PatchCoreHead(features.shape[1], PatchCoreConfig(), seed=s) for s in (0, 0, 3)]
    for head in heads:
        head.fit_statistics(features)
    n, _, h, w = features.shape
    assert heads[0].memory.shape == (1, math.ceil(0.1 * n * h * w), features.shape[1])
    assert torch.equal(heads[0].memory, heads[1].memory)
    assert not torch.equal(heads[0].memory, heads[2].memory)


def test_greedy_coreset_covers_better_than_random():
    points = flat_patches(_extract(sorted(str(p) for p in (COOKIES / "train" / "good").glob("*.jpg"))[:6], TINY))
    chosen = greedy_coreset(points, 40, torch.Generator().manual_seed(0))
    assert len(set(chosen.tolist())) == 40
    random = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[:40]
    radius = [float(nearest_distance(points, points[idx]).max()) for idx in (chosen, random)]
    assert radius[0] < radius[1]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("detector", ["memory", "patchcore"])
def test_traced_head_keeps_a_dynamic_batch(planted, detector):
    """Exporters trace the head: the traced graph must not bake in the block loop of one batch size.
    (Compared with the eager exact search: on training images, whose own patches are stored, the
    graph's expanded-square distances round a zero to ~0.03 where the bfloat16 shortlist's are exact.)"""
    _, features, _ = planted
    config = ModelConfig(detector=detector, memory=MemoryConfig(n_memories=2, candidates=0))
    head = build_head(config, features.shape[1], tuple(features.shape[2:]))
    head.fit_statistics(features)
    with torch.no_grad():
        traced = torch.jit.trace(head, features[:2], check_trace=False)
        torch.testing.assert_close(traced(features[:7]), head.patch_scores(features[:7]), rtol=1e-4, atol=1e-3)

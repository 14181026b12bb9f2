"""The robust first opinion in charge: fences, the memory's leave-one-out opinion, the gate in the trainer,
per-patch and per-image loss weights, on real tiles with painted defects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig
from comet_studio.core.config import SimpleNetConfig, TrustConfig
from comet_studio.core.data import scan_folder
from comet_studio.core.detectors import SimpleNetHead
from comet_studio.core.training.opinion import memory_opinion
from comet_studio.core.training.presets import STRATEGIES, strategy_config
from comet_studio.core.training.weighting import robust_fence

SIZE = 128
# The trust strategy on a trained head (its patch weights, comebacks, threshold); memory + trust is tested below.
MODEL = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=SIZE))


@pytest.fixture(scope="module")
def planted(planted_folder):
    root, planted_paths = planted_folder
    paths = scan_folder(root).paths
    model = AnomalyModel(MODEL, train=TrainConfig(device="cpu"))
    return paths, model.extract(paths), np.array([p in planted_paths for p in paths])


def test_the_lower_half_fence_holds_at_40_percent_contamination():
    rng = np.random.default_rng(0)
    good, bad = rng.normal(0, 1, 60), rng.normal(6, 1, 40)  # 40% outliers, well separated
    scores = np.concatenate([good, bad])
    fences = {rule: robust_fence(scores, rule, k)[0] for rule, k in (("tukey", 1.5), ("lower", 3), ("mad", 3))}
    flagged = {rule: (scores[60:] > fence).mean() for rule, fence in fences.items()}
    assert flagged["lower"] >= 0.95  # the lower half is all good: the fence stays below the outliers
    assert flagged["tukey"] < 0.5  # Q3 sits among the outliers and the fence rises over them
    assert (scores[:60] > fences["lower"]).mean() <= 0.1
    with pytest.raises(ValueError, match="fence rule"):
        robust_fence(scores, "median")  # type: ignore[arg-type]


def test_the_opinion_puts_the_painted_defects_out_and_distrusts_their_patches(planted):
    _, features, mask = planted
    config = TrustConfig(fence="lower", k=3, patch_fence="lower", patch_k=3)
    seen = []
    opinion = memory_opinion(features, config, seed=0, progress=lambda done, total: seen.append((done, total)))
    assert opinion.patch_scores.shape == (len(features), *[s // 2 for s in features.shape[2:]])
    assert seen[-1] == (len(features), len(features))
    out = opinion.excluded(config)
    assert out[mask].all() and out[~mask].mean() <= 0.15  # 27 images: a coarse fence
    weights = opinion.patch_weights(config, tuple(features.shape[2:]), keep=~out)
    assert weights.shape == (len(features), *features.shape[2:])
    assert set(weights.unique().tolist()) <= {0.0, 1.0}
    # The painted blob and scratch cover ~10% of an image: their patches, not the good ones, lose weight.
    assert (1 - weights[mask].mean()) > 3 * (1 - weights[~mask].mean())


def test_a_zero_weight_patch_teaches_the_head_nothing(planted):
    _, features, _ = planted
    head = SimpleNetHead(features.shape[1], SimpleNetConfig(train_patches=0),
                         generator=torch.Generator().manual_seed(0))
    head.fit_statistics(features)
    batch = features[:2].float()
    weights = torch.ones(2, *features.shape[2:])
    weights[1] = 0  # the second image: every patch distrusted
    loss = head.per_sample_loss(batch, torch.Generator().manual_seed(0), patch_weights=weights)
    assert loss[1] == 0 and loss[0] > 0
    loss.sum().backward()
    grads = [p.grad.clone() for p in head.trainable_parameters()]
    head.zero_grad()
    head.per_sample_loss(batch[:1], torch.Generator().manual_seed(0), patch_weights=weights[:1]).sum().backward()
    for full, alone in zip(grads, (p.grad for p in head.trainable_parameters()), strict=True):
        torch.testing.assert_close(full, alone)  # the distrusted image added no gradient at all


def test_default_training_gates_the_planted_images_out(planted):
    paths, features, mask = planted
    train = TrainConfig(rounds=2, steps_per_round=4, device="cpu", trust=TrustConfig(fence="lower", k=3))
    stages = []
    model = AnomalyModel(MODEL, train=train).fit(
        paths, features=features, progress=lambda stage, done, total: stages.append(stage),
        callback=lambda event: None)
    result = model.result_
    assert "trust" in stages  # the leave-one-out pass reports progress
    assert (result.weights[mask] == 0).all() and result.rejected[mask].all()
    assert np.median(result.weights[~mask]) == 1.0
    assert model.opinion_ is not None and model.opinion_.excluded(train.trust)[mask].all()
    # The decision threshold is read from the images that stayed in: the planted ones score above it.
    assert (result.scores[mask] > result.threshold).all()


def test_a_good_override_brings_an_image_back(planted):
    paths, features, mask = planted
    first = int(np.flatnonzero(mask)[0])
    train = TrainConfig(rounds=1, steps_per_round=2, device="cpu", trust=TrustConfig(fence="lower", k=3))
    result = AnomalyModel(MODEL, train=train).fit(
        paths, features=features, overrides={first: "good"}).result_
    assert result.weights[first] == 1.0 and not result.rejected[first]
    assert (result.weights[mask & (np.arange(len(mask)) != first)] == 0).all()


def test_the_memory_detector_leaves_the_gated_images_out_of_its_memory(planted):
    paths, features, mask = planted
    train = TrainConfig(device="cpu", trust=TrustConfig(fence="lower", k=3))
    model = AnomalyModel(ModelConfig(detector="memory", backbone=BackboneConfig(image_size=SIZE)), train=train)
    stages = []
    result = model.fit(paths, features=features, progress=lambda stage, done, total: stages.append(stage)).result_
    assert "trust" in stages and "memory pass 1" in stages  # both leave-one-out passes report progress
    owners = set(model.inference_.head.owner.unique().tolist())
    assert owners.isdisjoint(np.flatnonzero(mask).tolist())
    assert (result.weights[mask] == 0).all()


def test_strategies_are_defined_once():
    assert strategy_config("trust").prior == "memory" and strategy_config("trust").comet == CoMetConfig()
    assert strategy_config("baseline").prior == "none" and not strategy_config("baseline").comet.weighting
    assert strategy_config("comet").comet.loss_weights is False  # the earlier default, kept reproducible
    assert strategy_config("comet+prior").trust.mode == "blend"
    assert strategy_config("trust+patch").trust.patch_weights and not TrainConfig().trust.patch_weights
    assert TrainConfig().prior == "memory" and set(STRATEGIES) >= {"trust", "baseline", "refine", "comet"}
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_config("magic")


def test_a_run_folder_keeps_the_distrusted_patches_for_the_inspect_view(planted_folder, planted, tmp_path):
    from comet_studio.workflows.run import read_distrusted, read_samples, train_run
    from comet_studio.viz.overlays import outline_patches

    root, planted_paths = planted_folder
    _, features, _ = planted
    train = TrainConfig(rounds=1, steps_per_round=2, device="cpu", trust=TrustConfig(fence="lower", k=3))
    run = train_run(root, tmp_path / "run", MODEL, train,
                    features=features)
    distrusted = read_distrusted(run.run_dir)
    paths = [r["path"] for r in read_samples(run.run_dir)]
    assert distrusted.shape == (len(paths), *[s // 2 for s in features.shape[2:]]) and distrusted.dtype == bool
    mask = np.array([p in planted_paths for p in paths])
    assert distrusted[mask].mean() > 3 * distrusted[~mask].mean()  # the painted blobs, not the good tiles
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    cells = np.zeros((4, 4), dtype=bool)
    cells[1, 2] = True
    outlined = outline_patches(image, cells)
    changed = np.argwhere((outlined != image).any(axis=2))
    assert changed[:, 0].min() >= 16 and changed[:, 0].max() < 32  # only the marked cell's border
    assert changed[:, 1].min() >= 32 and changed[:, 1].max() < 48
    plain = train_run(root, tmp_path / "plain", MODEL,
                      TrainConfig(rounds=1, steps_per_round=2, device="cpu", prior="none"), features=features)
    assert read_distrusted(plain.run_dir) is None


def _copies_of_one_defect(n_good: int = 40, n_copies: int = 16, dim: int = 16) -> tuple[torch.Tensor, np.ndarray]:
    """Feature maps of good images and of ``n_copies`` images that share one defect (a 2x2 patch near one
    vector): the copies vouch for each other in a leave-one-out memory, as copied test defects do."""
    generator = torch.Generator().manual_seed(0)
    good = torch.randn(n_good, dim, 8, 8, generator=generator)
    defect = torch.randn(dim, generator=generator) * 4
    copies = torch.randn(n_copies, dim, 8, 8, generator=generator)
    copies[:, :, 2:4, 2:4] = defect[None, :, None, None] + torch.randn(n_copies, dim, 2, 2, generator=generator)
    return torch.cat([good, copies]), np.r_[np.zeros(n_good, bool), np.ones(n_copies, bool)]


def test_trimming_rounds_stop_copies_of_one_defect_vouching_for_each_other():
    features, copies = _copies_of_one_defect()
    one_pass = TrustConfig(pool=1)
    first = memory_opinion(features, one_pass, seed=0).excluded(one_pass)
    assert first[copies].mean() <= 0.5  # 16 of 56 images alike: most of them look normal to each other
    trimmed = TrustConfig(pool=1, trim_rounds=2)
    seen = []
    out = memory_opinion(features, trimmed, seed=0, progress=lambda done, total: seen.append((done, total))) \
        .excluded(trimmed)
    assert out[copies].all() and out[~copies].sum() <= 1
    assert seen[-1] == (3 * len(features), 3 * len(features))  # one bar over every pass, completed


def test_an_out_image_teaches_only_its_trusted_patches(planted):
    from comet_studio.core.training.round_weights import OpinionGate
    from comet_studio.core.training.weighting import SampleWeights

    paths, features, mask = planted
    trust = TrustConfig(teach_trusted_patches=True, patch_margin=1)
    opinion = memory_opinion(features, trust, seed=0)
    grid = tuple(features.shape[2:])
    gate = OpinionGate.build(opinion.image_scores, opinion, TrainConfig(trust=trust), grid)
    out = opinion.excluded(trust)
    assert out[mask].all() and gate.patch_weights is not None
    kept = gate.patch_weights[torch.as_tensor(~out)]
    assert (kept == 1).all()  # the images in teach every patch: no global patch fence
    trusted = gate.patch_weights[torch.as_tensor(mask)]
    assert 0 < trusted.mean() < 0.95  # a planted image keeps its good patches, not its painted defect
    plain = opinion.patch_weights(trust, grid, keep=~out)
    assert (trusted <= plain[torch.as_tensor(mask)]).all()  # the margin only removes more
    # Reported weights stay 0 for the out images (what the user sees); training weights are 1, but an
    # image the user excluded teaches nothing.
    first = int(np.flatnonzero(mask)[0])
    excluded = {first: "exclude"}
    state = SampleWeights(np.where(out, 0.0, 1.0), out.copy(), 1.0, 0.0)
    weights = gate.training_weights(state, excluded)
    assert weights[first] == 0 and (weights[mask & (np.arange(len(mask)) != first)] == 1).all()
    result = AnomalyModel(MODEL, train=TrainConfig(
        rounds=1, steps_per_round=2, device="cpu", trust=trust)).fit(paths, features=features).result_
    assert (result.weights[mask] == 0).all() and result.rejected[mask].all()  # what the user sees
    off = OpinionGate.build(opinion.image_scores, opinion, TrainConfig(), grid)
    assert off.patch_weights is None and (off.training_weights(state, {}) == state.weights).all()

"""SimpleNetHead directly: standardisation statistics, the identity adaptor, the hinge loss against noised
features, patch weights, and that a few steps separate normal features from shifted ones."""

from __future__ import annotations

import torch

from comet_studio.core.config import SimpleNetConfig
from comet_studio.core.detectors.base import top_k_mean
from comet_studio.core.detectors.simplenet import SimpleNetHead

DIM, GRID = 16, (4, 4)
CONFIG = SimpleNetConfig(hidden_dim=32, train_patches=0)


def _features(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, *GRID, generator=g) * 2.0 + 3.0 + shift


def _head(seed: int = 0) -> SimpleNetHead:
    return SimpleNetHead(DIM, CONFIG, generator=torch.Generator().manual_seed(seed))  # its initial weights


def test_fit_statistics_standardise_the_patches():
    head, features = _head(), _features(6, 0)
    assert torch.equal(head.adaptor.weight, torch.eye(DIM)) and not head.adaptor.bias.any()  # starts as identity
    head.fit_statistics(features)
    patches = features.permute(0, 2, 3, 1).reshape(-1, DIM)
    assert torch.allclose(head.feature_mean, patches.mean(0)) and torch.allclose(head.feature_std, patches.std(0))
    adapted = head._adapted(features).reshape(-1, DIM)
    assert torch.allclose(adapted.mean(0), torch.zeros(DIM), atol=1e-5)
    assert torch.allclose(adapted.std(0), torch.ones(DIM), atol=1e-5)


def test_loss_is_per_sample_seeded_and_weighted():
    head = _head()
    features = _features(3, 1)
    head.fit_statistics(features)
    loss = head.per_sample_loss(features, torch.Generator().manual_seed(7))
    assert loss.shape == (3,) and (loss >= 0).all() and torch.isfinite(loss).all()
    again = head.per_sample_loss(features, torch.Generator().manual_seed(7))
    assert torch.equal(loss, again)  # the noise comes from the generator handed in
    zero = head.per_sample_loss(features, torch.Generator().manual_seed(7), patch_weights=torch.zeros(3, *GRID))
    assert torch.equal(zero, torch.zeros(3))  # a weight-0 patch teaches nothing
    ones = head.per_sample_loss(features, torch.Generator().manual_seed(7), patch_weights=torch.ones(3, *GRID))
    assert torch.allclose(ones, loss)


def test_trainable_parameters_are_the_adaptor_and_discriminator():
    head = _head()
    names = {name for name, p in head.named_parameters() if any(p is q for q in head.trainable_parameters())}
    assert names == {n for n, _ in head.named_parameters()}
    assert {"feature_mean", "feature_std"} <= set(dict(head.named_buffers()))  # statistics are buffers


def test_training_separates_normal_from_shifted_features():
    head = _head()
    train = _features(8, 2)
    head.fit_statistics(train)
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(head.trainable_parameters(), lr=1e-3)
    head.train()
    first = head.per_sample_loss(train, generator).mean().item()
    for _ in range(150):
        optimiser.zero_grad()
        loss = head.per_sample_loss(train, generator).mean()
        loss.backward()
        optimiser.step()
    assert loss.item() < first
    head.eval()
    with torch.no_grad():
        normal, shifted = head.image_scores(_features(4, 3)), head.image_scores(_features(4, 4, shift=8.0))
        patches = head.patch_scores(_features(2, 5))
    assert patches.shape == (2, *GRID)
    assert torch.equal(head.image_scores(_features(2, 5)), top_k_mean(patches, CONFIG.top_k))
    assert shifted.min() > normal.max()  # higher = more anomalous

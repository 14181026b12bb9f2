"""Test-time views (ModelConfig.tta) and training views (ModelConfig.augment) on real tiles: a view's map
comes back onto the image, a model with views scores the same eagerly, in its graph and after a reload
(ONNX and TorchScript: the detector contract test), its threshold is set from its training images scored
the same way, and training views teach the memory a part it would otherwise only see upright."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, ModelConfig, TrainConfig
from comet_studio.core.config import TEST_VIEWS, MemoryConfig
from comet_studio.core.data.transforms import load_resized, to_tensor
from comet_studio.core.data.views import align_view, apply_view
from comet_studio.core.detectors.base import top_k_mean
from comet_studio.core.training.weighting import iqr_threshold
from tests.conftest import MAGNETIC, TINY, good_tiles

TRAIN = TrainConfig(device="cpu")  # the memory trains in seconds: defaults
VIEWS = ("hflip", "rot90", "brighter")


def _memory(**views) -> AnomalyModel:
    config = ModelConfig(detector="memory", backbone=BackboneConfig(image_size=TINY), **views)
    return AnomalyModel(config, train=TRAIN)


@pytest.fixture(scope="module")
def unseen() -> list:
    return [sorted((MAGNETIC / "test" / d).glob("*.jpg"))[0] for d in ("good", "blowhole", "crack")]


@pytest.fixture(scope="module")
def with_views():
    return _memory(tta=VIEWS).fit(good_tiles(10))


@pytest.mark.parametrize("name", TEST_VIEWS)
def test_a_view_map_comes_back_onto_the_image(name):
    image = to_tensor([load_resized(good_tiles(1)[0], TINY)])
    image[:, :, 5:15, 40:60] = 1.0  # an off-centre mark, so every flip and turn moves it
    seen = apply_view(image, name)
    assert seen.shape == image.shape and 0 <= float(seen.min()) and float(seen.max()) <= 1
    # a "score map" that is the view's own pixels: aligned back it is the image's (photometric views keep
    # the geometry, so their map is where the mark is too)
    back = align_view(seen[:, 0], name)
    marked = image[:, 0] == 1.0
    assert float(back[marked].mean()) > float(back[~marked].mean()) + 0.2
    if name in ("hflip", "vflip", "rot90", "rot180", "rot270"):
        torch.testing.assert_close(back, image[:, 0])


def test_unknown_or_repeated_views_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown view 'spin'"):
        ModelConfig(tta=("spin",))
    with pytest.raises(ValueError, match="views repeat"):
        ModelConfig(augment="rot90,rot90")
    assert ModelConfig(tta="hflip, rot90").tta == ("hflip", "rot90")  # the CLI's spelling


def test_views_score_the_same_eagerly_in_the_graph_and_after_a_reload(with_views, unseen, tmp_path):
    model = with_views
    eager = model.predict(unseen)
    with torch.no_grad():
        graph = model.inference_(to_tensor([load_resized(p, TINY) for p in unseen]))
    np.testing.assert_allclose(graph.image_score.numpy(), eager.image_score, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict_features(model.extract_views(unseen)).image_score, eager.image_score, rtol=1e-6)
    # one view alone scores differently: the views are really averaged
    plain = _memory().fit(good_tiles(10))
    assert not np.allclose(plain.predict(unseen).raw_score, eager.raw_score, rtol=1e-3)

    # ONNX and TorchScript parity of a model with views: the detector contract test (its memory has views)
    loaded = AnomalyModel.load(model.save(tmp_path / "run"), device="cpu")
    assert loaded.config.tta == VIEWS
    np.testing.assert_allclose(loaded.predict(unseen).image_score, eager.image_score, rtol=1e-6)


def test_cached_features_without_the_views_are_a_clear_error(with_views, unseen):
    with pytest.raises(ValueError, match="extract_views"):
        with_views.predict_features(with_views.extract(unseen))


def test_the_threshold_is_read_from_the_training_images_scored_through_the_views(with_views):
    model = with_views
    head = model.inference_.head
    members = np.flatnonzero(~model.result_.rejected & (model.result_.weights > 0))
    images = [good_tiles(10)[i] for i in members]
    # each trusted image leave-one-out against the memory of the others, through every view, maps averaged
    maps = [head.training_patch_scores(model.extract(images, view=view)) for view in (None, *VIEWS)]
    aligned = [maps[0]] + [align_view(m, v) for m, v in zip(maps[1:], VIEWS)]
    scores = top_k_mean(torch.stack(aligned).mean(0), head.top_k).numpy()
    threshold, median = iqr_threshold(scores, TRAIN.comet.iqr_k)
    assert model.threshold_ == pytest.approx(threshold, rel=1e-5)
    assert float(model.inference_.post.median) == pytest.approx(median, rel=1e-5)
    assert model.threshold_ != pytest.approx(model.result_.threshold, rel=1e-3)  # not the trainer's plain one


def test_training_views_teach_the_memory_a_turned_part():
    train, held_out = good_tiles(10), good_tiles(4, offset=20)
    turned = [np.ascontiguousarray(np.rot90(load_resized(p, TINY))) for p in held_out]
    upright = _memory().fit(train)
    taught = _memory(augment=("rot90", "rot270")).fit(train)
    assert taught.predict(turned).raw_score.mean() < 0.9 * upright.predict(turned).raw_score.mean()
    # the views are more patches of the same image: with every patch kept, each image owns its own and its
    # views' patches, so leave-one-out leaves all of them out together
    whole = AnomalyModel(ModelConfig(detector="memory", backbone=BackboneConfig(image_size=TINY), augment="rot90",
                                     memory=MemoryConfig(n_memories=1, fraction=1.0)),
                         train=TrainConfig(device="cpu", prior="none")).fit(train[:4])
    head = whole.inference_.head
    h, w = whole.features_.shape[2:]
    assert np.bincount(head.owner[0].numpy()).tolist() == [2 * h * w] * 4

"""PostProcessor (fitted score normalisation in buffers) and AnomalyMap (patch scores -> smoothed heatmap)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comet_studio.core.detectors.anomaly_map import AnomalyMap
from comet_studio.core.detectors.postprocess import PostProcessor


def test_postprocessor_maps_median_to_0_and_threshold_to_half():
    post = PostProcessor()
    post.set(threshold=3.0, median=1.0)
    out = post(torch.tensor([1.0, 3.0, 5.0, -1.0]))
    assert torch.allclose(out, torch.tensor([0.0, 0.5, 1.0, -0.5]))


def test_postprocessor_degenerate_scores_still_order():
    post = PostProcessor()
    post.set(threshold=2.0, median=2.0)  # constant training scores: the threshold is nudged above the median
    assert post.threshold.item() > post.median.item()
    out = post(torch.tensor([2.0, 2.1]))
    assert out[0] == 0 and out[1] > 0.5


def test_postprocessor_statistics_travel_in_the_state_dict():
    post = PostProcessor()
    post.set(threshold=4.0, median=-1.0)
    state = post.state_dict()
    assert set(state) == {"threshold", "median"}
    loaded = PostProcessor()
    loaded.load_state_dict(state)
    x = torch.linspace(-3, 6, 7)
    assert torch.equal(loaded(x), post(x))


def test_anomaly_map_shape_and_constant_input():
    amap = AnomalyMap((64, 48), sigma=4.0)
    out = amap(torch.full((2, 8, 6), 0.7))
    assert out.shape == (2, 64, 48)
    assert torch.allclose(out, torch.full_like(out, 0.7), atol=1e-6)  # reflect padding: no dark rim


def test_anomaly_map_without_blur_is_bilinear_upsampling():
    scores = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(scores.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False).squeeze(1)
    assert torch.allclose(AnomalyMap((32, 32), sigma=0)(scores), expected)


def test_anomaly_map_blur_keeps_mass_centre_and_peak():
    scores = torch.zeros(1, 9, 9)
    scores[0, 4, 4] = 1.0
    sharp, blurred = AnomalyMap((72, 72), sigma=0)(scores), AnomalyMap((72, 72), sigma=2.0)(scores)
    peak = divmod(int(blurred[0].argmax()), 72)
    assert abs(peak[0] - 35.5) <= 1 and abs(peak[1] - 35.5) <= 1  # the hot patch's centre
    assert blurred.max() < sharp.max()
    assert blurred.sum().item() == pytest.approx(sharp.sum().item(), rel=1e-4)  # a normalised kernel
    assert torch.allclose(blurred[0], blurred[0].T, atol=1e-6)  # separable and symmetric


def test_anomaly_map_kernel_is_not_saved():
    amap = AnomalyMap((16, 16), sigma=1.5)
    assert amap.kernel.sum().item() == pytest.approx(1.0)
    assert "kernel" not in amap.state_dict()  # rebuilt from sigma, so a checkpoint does not depend on it

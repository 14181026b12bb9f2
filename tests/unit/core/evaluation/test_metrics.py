"""The hand-written metrics against brute force on tiny inputs: F1-max and image AUROC over every threshold,
AUPRO from its definition (per-region overlap averaged over regions, integrated over FPR <= 0.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from comet_studio.core.evaluation.metrics import aupro, f1_max, image_auroc, pixel_auroc, rejection_quality


def _f1_brute(labels: np.ndarray, scores: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp, fp, fn = (pred & labels).sum(), (pred & ~labels).sum(), (~pred & labels).sum()
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return float(best)


def _auroc_brute(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_and_auroc_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(30) < 0.4
    labels[:2] = [True, False]
    scores = np.round(rng.normal(size=30) + labels, 1)  # rounded: ties included
    assert f1_max(labels, scores) == pytest.approx(_f1_brute(labels, scores))
    assert image_auroc(labels, scores) == pytest.approx(_auroc_brute(labels, scores))


def test_one_class_gives_nan():
    assert math.isnan(f1_max(np.zeros(4), np.arange(4.0)))
    assert math.isnan(image_auroc(np.ones(4), np.arange(4.0)))
    assert math.isnan(pixel_auroc(np.zeros((2, 3, 3)), np.ones((2, 3, 3))))
    assert math.isnan(aupro(np.zeros((2, 3, 3), dtype=bool), np.ones((2, 3, 3))))


def _aupro_brute(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float:
    regions = []
    for mask, amap in zip(masks, maps):
        labelled, count = ndimage.label(mask)
        regions += [amap[labelled == r] for r in range(1, count + 1)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:  # every distinct threshold, high to low
        points.append(((normal >= t).mean(), np.mean([(r >= t).mean() for r in regions])))
    fpr, pro = np.array(points).T
    end = np.searchsorted(fpr, max_fpr, side="right")
    x = np.concatenate([fpr[:end], [max_fpr]])
    y = np.concatenate([pro[:end], [np.interp(max_fpr, fpr, pro)]])
    return float(np.trapezoid(y, x) / max_fpr)


@pytest.mark.parametrize("seed", range(4))
def test_aupro_equals_its_definition(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 12, 12), dtype=bool)
    masks[0, 2:5, 2:6] = True  # two regions of different sizes in one image: each counts once
    masks[0, 8:10, 8:9] = True
    masks[1, 5:9, 3:7] = True
    maps = rng.random(masks.shape).astype(np.float32) + 0.6 * masks
    assert aupro(masks, maps, bins=4000) == pytest.approx(_aupro_brute(masks, maps), abs=2e-3)


def test_aupro_bounds_and_region_weighting():
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, 1:3, 1:3] = True  # small region
    masks[0, 4:10, 4:10] = True  # large region
    assert aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    assert aupro(masks, (~masks).astype(np.float32)) == pytest.approx(0.0, abs=1e-6)
    # Finding only the large region (90% of the defect pixels) gives PRO 0.5 at FPR 0, whatever its pixel
    # share; the next threshold (0) flags everything, so the curve runs straight to (1, 1): 0.5 + 0.5 * 0.3 / 2.
    large_only = np.zeros_like(masks, dtype=np.float32)
    large_only[0, 4:10, 4:10] = 1.0
    assert aupro(masks, large_only) == pytest.approx(0.575, abs=1e-3) == _aupro_brute(masks, large_only)


def test_pixel_auroc_subsample_is_close_to_the_full_value():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 50, 50)) < 0.1
    maps = rng.random(masks.shape) + masks
    full = pixel_auroc(masks, maps)
    assert full == pytest.approx(_auroc_brute(masks.ravel(), maps.ravel().astype(np.float32)))
    assert pixel_auroc(masks, maps, max_pixels=5000) == pytest.approx(full, abs=0.02)


def test_rejection_quality_counts_the_planted_among_the_lowest_weights():
    planted = np.array([True, True, False, False, False])
    weights = np.array([0.1, 1.0, 0.2, 1.0, 1.0])
    scores = np.array([5.0, 1.0, 4.0, 0.0, 0.0])
    rejected = np.array([True, False, True, False, False])
    quality = rejection_quality(planted, weights, scores, rejected=rejected)
    assert quality["planted_in_lowest"] == 0.5  # the two lowest weights: one planted, one not
    assert quality["rejection_precision"] == 0.5 and quality["rejection_recall"] == 0.5

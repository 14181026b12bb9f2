"""Anomaly-detection metrics: image AUROC, pixel AUROC, AUPRO (FPR <= 0.3), F1-max, rejection quality."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

__all__ = ["image_auroc", "pixel_auroc", "aupro", "f1_max", "rejection_quality"]


def _two_classes(labels: np.ndarray) -> bool:
    return len(np.unique(labels)) == 2


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels).astype(int)
    return float(roc_auc_score(labels, scores)) if _two_classes(labels) else float("nan")


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds (sklearn's precision-recall curve)."""
    labels = np.asarray(labels).astype(int)
    if not _two_classes(labels):
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def pixel_auroc(masks: np.ndarray, maps: np.ndarray, max_pixels: int = 20_000_000, seed: int = 0) -> float:
    """AUROC over all pixels (a seeded uniform subsample above ``max_pixels``, to bound memory and time)."""
    y = np.asarray(masks, dtype=bool).ravel()
    s = np.asarray(maps, dtype=np.float32).ravel()
    if y.size > max_pixels:
        keep = np.random.default_rng(seed).choice(y.size, max_pixels, replace=False)
        y, s = y[keep], s[keep]
    return float(roc_auc_score(y, s)) if y.any() and not y.all() else float("nan")


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3, bins: int = 2000) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, normalised to [0, 1] (MVTec AD's AUPRO).

    Each connected defect region counts equally, whatever its size. PRO and FPR are computed at ``bins``
    thresholds from per-region histograms, which is exact up to the bin width.
    """
    masks = np.asarray(masks, dtype=bool)
    maps = np.asarray(maps, dtype=np.float32)
    if not masks.any():
        return float("nan")
    low, high = float(maps.min()), float(maps.max())
    edges = np.linspace(low, high + 1e-6 * max(1.0, abs(high)), bins + 1)

    def above(values: np.ndarray) -> np.ndarray:
        """Fraction of values above each threshold edge (descending thresholds -> ascending fractions)."""
        hist = np.histogram(values, bins=edges)[0][::-1]
        return np.concatenate([[0], np.cumsum(hist)]) / max(len(values), 1)

    fpr = above(maps[~masks])
    pros = []
    for mask, amap in zip(masks, maps, strict=True):
        if not mask.any():
            continue
        regions, count = ndimage.label(mask)
        for region in range(1, count + 1):
            pros.append(above(amap[regions == region]))
    pro = np.mean(pros, axis=0)
    # Integrate PRO over FPR up to max_fpr (interpolating the end point).
    end = np.searchsorted(fpr, max_fpr, side="right")
    x = np.concatenate([fpr[:end], [max_fpr]])
    y = np.concatenate([pro[:end], [np.interp(max_fpr, fpr, pro)]])
    return float(np.trapezoid(y, x) / max_fpr)


def rejection_quality(planted: np.ndarray, weights: np.ndarray, scores: np.ndarray,
                      rejected: np.ndarray | None = None) -> dict[str, float]:
    """How well the planted anomalies were found: the share of planted samples among the k lowest-weight
    samples (k = number planted; ties broken by higher score), and precision/recall of the rejection."""
    planted = np.asarray(planted, dtype=bool)
    k = int(planted.sum())
    out: dict[str, float] = {"n_planted": float(k)}
    if k == 0:
        return out
    order = np.lexsort((-np.asarray(scores), np.asarray(weights)))
    out["planted_in_lowest"] = float(planted[order[:k]].mean())
    if rejected is not None:
        rejected = np.asarray(rejected, dtype=bool)
        hits = float((rejected & planted).sum())
        out["rejection_precision"] = hits / max(float(rejected.sum()), 1.0) if rejected.any() else float("nan")
        out["rejection_recall"] = hits / k
    return out

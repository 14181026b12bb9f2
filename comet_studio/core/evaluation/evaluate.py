"""Evaluate a fitted model on a labelled test set (MVTec layout): all metrics in one dict."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.images import read_mask
from ..data.mvtec import LabelledImage
from ..progress import Progress
from .metrics import aupro, f1_max, image_auroc, pixel_auroc

__all__ = ["evaluate_model", "verdict_quality", "read_masks"]


def verdict_quality(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Precision and recall of the "defective" verdict (NaN when nothing was flagged / nothing is defective)."""
    labels, predicted = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
    hits = float((labels & predicted).sum())
    return {"verdict_precision": hits / predicted.sum() if predicted.any() else float("nan"),
            "verdict_recall": hits / labels.sum() if labels.any() else float("nan")}


def read_masks(items: Sequence[LabelledImage], size: int) -> np.ndarray:
    """(N, size, size) bool ground-truth masks of ``items``; all False for an item without a mask."""
    masks = np.zeros((len(items), size, size), dtype=bool)
    for i, item in enumerate(items):
        if item.mask:
            masks[i] = read_mask(item.mask, (size, size))
    return masks


def evaluate_model(model, items: Sequence[LabelledImage], *, features=None,
                   progress: Progress | None = None) -> dict[str, float]:
    """Image AUROC, F1-max, pixel AUROC and AUPRO of ``model`` (an AnomalyModel) on ``items``.
    Masks are compared at the model's input resolution. ``features``: cached features of ``items`` (what
    ``model.extract_views`` gives, a single tensor for a model without test-time views); else they are read."""
    prediction = model.predict_features(features) if features is not None else \
        model.predict([i.path for i in items], progress=progress)
    labels = np.array([i.label for i in items])
    size = prediction.anomaly_map.shape[-1]
    masks = read_masks(items, size)
    has_masks = any(i.mask for i in items)
    return {
        "image_auroc": image_auroc(labels, prediction.image_score),
        "image_f1_max": f1_max(labels, prediction.image_score),
        "pixel_auroc": pixel_auroc(masks, prediction.anomaly_map) if has_masks else float("nan"),
        "aupro": aupro(masks, prediction.anomaly_map) if has_masks else float("nan"),
        # The verdict an engineer acts on: pass/fail at the model's own threshold (set from training scores).
        **verdict_quality(labels, prediction.pred_label),
        "n_test": int(len(items)),
        "n_anomalous": int(labels.sum()),
    }

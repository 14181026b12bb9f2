"""Soft Confident Learning: IQR threshold over per-image scores -> confidence weights, rejection, overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..config import FENCES

__all__ = ["Override", "Fence", "FENCES", "SampleWeights", "iqr_threshold", "robust_fence", "confidence_weights"]

Override = Literal["good", "exclude"]
Fence = Literal["tukey", "mad", "lower"]


@dataclass(frozen=True)
class SampleWeights:
    weights: np.ndarray  # (N,) in [0, 1]; 0 only for rejected or excluded samples
    rejected: np.ndarray  # (N,) bool: above the threshold in refinement mode, or excluded by the user
    threshold: float
    median: float


def iqr_threshold(scores: np.ndarray, k: float = 1.5) -> tuple[float, float]:
    """(T, median) with T = Q3 + k * IQR, Tukey's upper fence."""
    q1, median, q3 = np.percentile(np.asarray(scores, dtype=np.float64), [25, 50, 75])
    return float(q3 + k * (q3 - q1)), float(median)


def robust_fence(scores: np.ndarray, rule: Fence = "tukey", k: float = 1.5) -> tuple[float, float]:
    """(upper fence, median) of ``scores`` by ``rule``:

    - ``"tukey"``: Q3 + k IQR. Its quartiles move with the contamination: at 30-40% outliers Q3 sits among
      them and the fence rises over them.
    - ``"mad"``: median + k * 1.4826 MAD (the MAD of a normal sample estimates its std).
    - ``"lower"``: median + k (median - Q1): the spread read from the lower half only, which holds good
      images alone while fewer than half are contaminated.
    """
    values = np.asarray(scores, dtype=np.float64)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    if rule == "tukey":
        fence = q3 + k * (q3 - q1)
    elif rule == "mad":
        fence = median + k * 1.4826 * float(np.median(np.abs(values - median)))
    elif rule == "lower":
        fence = median + k * (median - q1)
    else:
        raise ValueError(f"fence rule must be one of {FENCES}, got {rule!r}")
    return float(fence), float(median)


def confidence_weights(
    scores: np.ndarray,
    k: float = 1.5,
    *,
    hard: bool = False,
    overrides: dict[int, Override] | None = None,
    ignore: np.ndarray | None = None,
) -> SampleWeights:
    """Per-image weights from anomaly scores (higher = more anomalous).

    Soft: w = 1 at or below T, and w = (T - med) / (s - med) above it, so a score twice as far from the
    median as the threshold counts half. Shifting by the median (rather than using T / s) keeps the weights
    meaningful whatever the score's offset, and beat T / s in our measurements.
    Hard (iterative refinement): samples above T get weight 0 and are marked rejected.
    User overrides win: "good" forces weight 1, "exclude" forces weight 0 (and is left out of the statistics).
    ``ignore`` (N,) bool leaves more samples out of the statistics (their weights are still computed).
    """
    scores = np.asarray(scores, dtype=np.float64)
    overrides = overrides or {}
    excluded = np.zeros(len(scores), dtype=bool)
    for index, choice in overrides.items():
        if choice == "exclude":
            excluded[index] = True
        elif choice != "good":
            raise ValueError(f"override for sample {index} must be 'good' or 'exclude', got {choice!r}")
    if ignore is not None:  # e.g. images a robust first opinion put out: not part of "normal"
        excluded = excluded | np.asarray(ignore, dtype=bool)
    basis = scores[~excluded] if (~excluded).sum() >= 4 else scores
    threshold, median = iqr_threshold(basis, k)
    above = scores > threshold
    if hard:
        weights = np.where(above, 0.0, 1.0)
        rejected = above.copy()
    else:
        spread = np.maximum(scores - median, 1e-12)
        weights = np.where(above, np.clip((threshold - median) / spread, 1e-6, 1.0), 1.0)
        rejected = np.zeros(len(scores), dtype=bool)
    for index, choice in overrides.items():
        weights[index] = 1.0 if choice == "good" else 0.0
        rejected[index] = choice == "exclude"
    return SampleWeights(weights=weights, rejected=rejected, threshold=threshold, median=median)

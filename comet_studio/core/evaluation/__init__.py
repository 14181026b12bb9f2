"""Metrics (scikit-learn for the ROC parts) and evaluation on labelled test sets."""

from .evaluate import evaluate_model
from .metrics import aupro, f1_max, image_auroc, pixel_auroc, rejection_quality

__all__ = ["evaluate_model", "aupro", "f1_max", "image_auroc", "pixel_auroc", "rejection_quality"]

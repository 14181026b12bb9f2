"""ROC curve of image scores against ground-truth labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from sklearn.metrics import roc_curve

__all__ = ["roc_figure"]


def roc_figure(labels: Sequence[int], scores: Sequence[float], *, auroc: float | None = None,
               threshold: float | None = None, height: int = 360) -> go.Figure:
    """ROC curve (1 = anomalous, higher score = more anomalous); ``threshold`` marks the operating point."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    if labels.min(initial=0) == labels.max(initial=0):
        raise ValueError("a ROC curve needs both good (0) and anomalous (1) images")
    fpr, tpr, _ = roc_curve(labels, scores)
    title = "ROC" + (f" (image AUROC {auroc:.3f})" if auroc is not None else "")
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name="ROC", line={"width": 3}))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot",
                                                                                        "color": "#999"}))
    if threshold is not None:
        predicted = scores > threshold
        op_fpr = float(predicted[labels == 0].mean())
        op_tpr = float(predicted[labels == 1].mean())
        figure.add_trace(go.Scatter(x=[op_fpr], y=[op_tpr], mode="markers", name=f"threshold {threshold:.2f}",
                                    marker={"size": 12, "color": "#d62728"}))
    figure.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate",
                         xaxis_range=[0, 1], yaxis_range=[0, 1.02], height=height, template="plotly_white",
                         margin={"l": 50, "r": 10, "t": 50, "b": 40})
    return figure

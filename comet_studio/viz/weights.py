"""Per-image anomaly scores against the IQR threshold, coloured by confidence weight."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["score_distribution"]


def score_distribution(scores: Sequence[float], weights: Sequence[float], threshold: float, *,
                       names: Sequence[str] | None = None, selected: int | None = None,
                       height: int = 340) -> go.Figure:
    """A histogram of the training scores above a strip plot (one dot per image, colour = weight), with
    the IQR threshold as a vertical line. Dots are jittered vertically with a fixed seed so the plot does
    not jump between refreshes."""
    scores = np.asarray(scores, dtype=float)
    weights = np.asarray(weights, dtype=float)
    names = list(names) if names is not None else [str(i) for i in range(len(scores))]
    jitter = np.random.default_rng(0).uniform(-0.35, 0.35, len(scores))
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.45, 0.55], vertical_spacing=0.04)
    figure.add_trace(go.Histogram(x=scores, nbinsx=min(40, max(10, len(scores) // 3)), name="images",
                                  marker_color="#8aa6c1", showlegend=False), row=1, col=1)
    figure.add_trace(go.Scatter(
        x=scores, y=jitter, mode="markers", text=names, customdata=weights, showlegend=False,
        hovertemplate="%{text}<br>score %{x:.4g}<br>weight %{customdata:.3f}<extra></extra>",
        marker={"color": weights, "cmin": 0, "cmax": 1, "colorscale": "RdYlGn", "size": 9,
                "line": {"width": 0.5, "color": "#333"}, "colorbar": {"title": "weight", "len": 0.55, "y": 0.28}}),
        row=2, col=1)
    if selected is not None and 0 <= selected < len(scores):
        figure.add_trace(go.Scatter(x=[scores[selected]], y=[jitter[selected]], mode="markers", showlegend=False,
                                    hoverinfo="skip", marker={"size": 18, "color": "rgba(0,0,0,0)",
                                                              "line": {"width": 2.5, "color": "#000"}}),
                         row=2, col=1)
    if np.isfinite(threshold):
        for row in (1, 2):
            figure.add_vline(x=threshold, line_color="#d62728", line_dash="dash", row=row, col=1)
        figure.add_annotation(x=threshold, y=1, yref="paper", text=f"IQR threshold {threshold:.3g}",
                              showarrow=False, xanchor="left", font={"color": "#d62728"})
    figure.update_yaxes(title_text="images", row=1, col=1)
    figure.update_yaxes(visible=False, row=2, col=1)
    figure.update_xaxes(title_text="anomaly score (higher = more anomalous)", row=2, col=1)
    figure.update_layout(height=height, margin={"l": 40, "r": 10, "t": 30, "b": 40}, template="plotly_white")
    return figure

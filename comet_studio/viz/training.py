"""Training curves per round: train/validation loss, the adaptive L2 weight lambda, the IQR threshold."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["training_curves", "empty_figure"]


def empty_figure(message: str, height: int = 300) -> go.Figure:
    """A blank figure that says why there is nothing to plot yet."""
    figure = go.Figure()
    figure.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                          font={"size": 14, "color": "#666"})
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, template="plotly_white")
    return figure


def _series(history: Sequence[Mapping], key: str) -> list[float | None]:
    # NaN breaks plotly's JSON; None leaves a gap instead.
    values = []
    for row in history:
        value = row.get(key)
        values.append(None if value is None or (isinstance(value, float) and math.isnan(value)) else value)
    return values


def training_curves(history: Sequence[Mapping], *, rounds: int | None = None, best_round: int | None = None,
                    height: int = 320) -> go.Figure:
    """Three panels from history.json rows (keys round, train_loss, val_loss, lambda, threshold).

    ``rounds`` fixes the x range (so a live plot does not rescale every round); ``best_round`` is marked.
    """
    if not history:
        return empty_figure("waiting for the first round", height)
    x = [row["round"] + 1 for row in history]
    figure = make_subplots(rows=1, cols=3, subplot_titles=("loss", "L2 weight lambda", "IQR threshold T"),
                           horizontal_spacing=0.08)
    figure.add_trace(go.Scatter(x=x, y=_series(history, "train_loss"), name="train loss", mode="lines+markers"),
                     row=1, col=1)
    figure.add_trace(go.Scatter(x=x, y=_series(history, "val_loss"), name="validation loss",
                                mode="lines+markers"), row=1, col=1)
    figure.add_trace(go.Scatter(x=x, y=_series(history, "lambda"), name="lambda", mode="lines+markers",
                                showlegend=False), row=1, col=2)
    figure.add_trace(go.Scatter(x=x, y=_series(history, "threshold"), name="threshold", mode="lines+markers",
                                showlegend=False), row=1, col=3)
    if best_round is not None and best_round >= 0:
        for col in (1, 2, 3):
            figure.add_vline(x=best_round + 1, line_dash="dot", line_color="#888", row=1, col=col)
    if rounds:
        figure.update_xaxes(range=[0.5, rounds + 0.5])
    span = rounds or len(history)
    figure.update_xaxes(title_text="round", tick0=1, dtick=max(1, span // 8))
    figure.update_layout(height=height, margin={"l": 40, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                         legend={"orientation": "h", "y": -0.25})
    return figure

"""Loss landscapes as surfaces (top) and contours (bottom), several side by side on one colour scale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["LandscapePanel", "landscape_figure"]


@dataclass(frozen=True)
class LandscapePanel:
    """One landscape to draw: ``losses[i, j]`` at ``(alphas[i], betas[j])``."""

    title: str
    alphas: np.ndarray
    betas: np.ndarray
    losses: np.ndarray


def landscape_figure(panels: Sequence[LandscapePanel], *, log_scale: bool = False, height: int = 720) -> go.Figure:
    """Surface and contour of each panel, columns side by side, one shared z range so that two runs
    (e.g. baseline vs CoMet) compare directly. The trained parameters are the marked centre point."""
    if not panels:
        raise ValueError("landscape_figure needs at least one landscape")
    transform = (lambda z: np.log10(np.maximum(z, 1e-12))) if log_scale else (lambda z: z)
    zs = [transform(np.asarray(p.losses, dtype=float)) for p in panels]
    zmin, zmax = float(min(z.min() for z in zs)), float(max(z.max() for z in zs))
    cols = len(panels)
    figure = make_subplots(rows=2, cols=cols, row_heights=[0.6, 0.4], vertical_spacing=0.06,
                           specs=[[{"type": "scene"}] * cols, [{"type": "xy"}] * cols],
                           subplot_titles=[p.title for p in panels] + [""] * cols)
    label = "log10 loss" if log_scale else "loss"
    for k, (panel, z) in enumerate(zip(panels, zs), start=1):
        # plotly draws z[row, col] at (x[col], y[row]): rows are betas, so transpose.
        figure.add_trace(go.Surface(x=panel.alphas, y=panel.betas, z=z.T, cmin=zmin, cmax=zmax,
                                    colorscale="Viridis", showscale=k == cols,
                                    colorbar={"title": label, "len": 0.55, "y": 0.72}), row=1, col=k)
        figure.add_trace(go.Contour(x=panel.alphas, y=panel.betas, z=z.T, zmin=zmin, zmax=zmax, ncontours=20,
                                    colorscale="Viridis", showscale=False), row=2, col=k)
        figure.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker={"symbol": "x", "size": 10,
                                                                           "color": "white"},
                                    name="trained", showlegend=False), row=2, col=k)
        scene = "scene" if k == 1 else f"scene{k}"
        figure.layout[scene].update(xaxis_title="alpha (direction 1)", yaxis_title="beta (direction 2)",
                                    zaxis_title=label, zaxis_range=[zmin, zmax])
    figure.update_xaxes(title_text="alpha")
    figure.update_yaxes(title_text="beta", scaleanchor=None)
    figure.update_layout(height=height, margin={"l": 40, "r": 10, "t": 40, "b": 40}, template="plotly_white")
    return figure

"""The bench's charts: image AUROC vs planted contamination, one line per model + method, written as HTML
(always) and PNG through kaleido, which drives a Chrome/Chromium; when that cannot work the reason is returned
and the HTML is kept."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["noise_figure", "write_figures"]


def noise_figure(summary: list[dict], category: str) -> go.Figure:
    """Image AUROC vs contamination for one category from the bench summary (one entry per category, model,
    method, protocol and noise with ``image_auroc_mean``/``_std`` and ``n_seeds``): std error bars."""
    summary = [s for s in summary if s["category"] == category and s["n_seeds"] > 0]
    protocols = {s["protocol"] for s in summary}
    figure = go.Figure()
    for line in dict.fromkeys((s["model"], s["method"], s["protocol"]) for s in summary):
        points = sorted((s for s in summary if (s["model"], s["method"], s["protocol"]) == line),
                        key=lambda s: s["noise"])
        name = f"{line[0]} + {line[1]}" + (f" ({line[2]})" if len(protocols) > 1 else "")
        figure.add_trace(go.Scatter(
            x=[s["noise"] for s in points], y=[s["image_auroc_mean"] for s in points], mode="lines+markers",
            name=name, error_y={"type": "data", "array": [s["image_auroc_std"] for s in points], "visible": True},
            customdata=[s["n_seeds"] for s in points],
            hovertemplate="noise %{x}<br>image AUROC %{y:.3f}<br>seeds %{customdata}<extra>" + name + "</extra>"))
    figure.update_layout(title=f"{category}: image AUROC vs planted contamination", template="plotly_white",
                         xaxis_title="contamination ratio (planted anomalies / clean training images)",
                         yaxis_title="image AUROC (mean ± std over seeds)", legend_title="model + method")
    return figure


def _write_pngs(figures: list[go.Figure], paths: list[Path]) -> str | None:
    """PNG through kaleido (one Chromium for all charts). Returns why it failed, or None."""
    try:
        pio.write_images(figures, paths, width=900, height=550)
        return None
    except Exception as error:  # noqa: BLE001 - any kaleido/browser failure means "HTML only"
        return (f"PNG export failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                f"the HTML charts were written. kaleido needs Chrome or Chromium: `apt-get install -y chromium` "
                f"or set BROWSER_PATH to the browser executable")


def write_figures(figures: list[go.Figure], html: list[Path], *, png: bool = True) -> tuple[list[Path], str | None]:
    """Write each figure to its ``html`` path and, with ``png``, beside it as .png; returns (the PNGs written,
    why PNG export failed or None)."""
    for figure, path in zip(figures, html, strict=True):
        # "directory": one plotly.min.js beside the charts, so they open offline.
        figure.write_html(path, include_plotlyjs="directory")
    png_paths = [p.with_suffix(".png") for p in html]
    error = _write_pngs(figures, png_paths) if png and figures else None
    return ([] if error or not png else png_paths), error

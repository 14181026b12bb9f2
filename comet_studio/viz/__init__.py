"""Every picture the studio, the CLI and the reports draw, from plain data (no core, workflow or gradio
imports): plotly figures (training curves, score distributions, ROC, loss landscape, bench charts) and
heatmap overlays on images (``overlays.py``).

The names below are loaded on first use, so importing one module (``viz.overlays`` for batch prediction)
does not import plotly.
"""

from importlib import import_module

_NAMES = {"roc_figure": "evaluation", "LandscapePanel": "landscape", "landscape_figure": "landscape",
          "empty_figure": "training", "training_curves": "training", "score_distribution": "weights",
          "noise_figure": "bench", "write_figures": "bench", "colorize": "overlays",
          "overlay_heatmap": "overlays", "outline_patches": "overlays"}

__all__ = list(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_NAMES[name]}", __name__), name)

"""Pure data -> plotly Figure functions for the studio and reports. No core or gradio imports."""

from .evaluation import roc_figure
from .landscape import LandscapePanel, landscape_figure
from .training import empty_figure, training_curves
from .weights import score_distribution

__all__ = ["roc_figure", "LandscapePanel", "landscape_figure", "empty_figure", "training_curves",
           "score_distribution"]

"""The Gradio studio: a thin shell over ``comet_studio.core`` (``python launch.py`` starts it)."""

from .main import build_app, launch_app, launch_options

__all__ = ["build_app", "launch_app", "launch_options"]

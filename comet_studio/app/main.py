"""``build_app(runs_dir)``: every tab's UI first, then every tab's events; ``launch_app`` serves it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from ..core.data.demo import ELPV_LICENSE, build_elpv_demo
from .context import AppContext
from .jobs import JobRegistry
from .runs import list_runs
from .tabs import TABS

__all__ = ["build_app", "launch_options", "launch_app", "MAX_UPLOAD"]

logger = logging.getLogger(__name__)
MAX_UPLOAD = "500mb"
CSS = """
#train-status, #inspect-summary, #test-summary { min-height: 2.5em; }
.gradio-container { max-width: 1500px !important; }
"""


def _demo_folder(runs_dir: Path) -> str:
    """The ELPV demo folder (built on first use), or "" when the elpv-dataset package is missing."""
    try:
        return str(build_elpv_demo(runs_dir / ".cache" / "demo-elpv").root)
    except (RuntimeError, OSError, ValueError) as error:
        logger.warning("no demo folder (%s); the Data tab starts empty", error)
        return ""


def build_app(runs_dir: str | Path, *, default_folder: str | None = None) -> gr.Blocks:
    """The studio. ``runs_dir`` holds every run (one folder each) and the cache of served images;
    ``default_folder`` preselects a data folder (default: the solar-cell demo folder)."""
    runs_dir = Path(runs_dir).expanduser().absolute()
    runs_dir.mkdir(parents=True, exist_ok=True)
    folder = _demo_folder(runs_dir) if default_folder is None else default_folder
    ctx = AppContext(runs_dir=runs_dir, registry=JobRegistry(), default_folder=folder)
    with gr.Blocks(title="CoMet Studio") as app:
        ctx.blocks = app
        gr.Markdown("## CoMet Studio\nTrain an anomaly detector on a folder of images that may hide some defects: "
                    "CoMet down-weights the images it does not trust. "
                    + (f"Demo images: ELPV solar cells, {ELPV_LICENSE}." if folder and default_folder is None
                       else ""))
        with gr.Tabs():
            for tab in TABS:
                tab.create_ui(ctx)
        for tab in TABS:
            tab.bind_events(ctx)

        def list_runs_api() -> list[dict]:
            """Finished runs, newest first: id, strategy, detector, image size, images, stopped early."""
            return [{"run_id": r.id, "strategy": r.strategy, "detector": r.detector, "image_size": r.image_size,
                     "n_images": r.n_images, "stopped": r.stopped, "data": r.data} for r in list_runs(runs_dir)]

        gr.api(list_runs_api, api_name="list_runs", concurrency_limit=None)
    app.queue(default_concurrency_limit=2)
    return app


def launch_options(runs_dir: str | Path) -> dict[str, Any]:
    """``launch()`` keywords: theme and CSS (Gradio 6 takes them here), and the only folder served besides
    Gradio's temp folder: the runs folder, where every image the page shows is written."""
    return {"theme": gr.themes.Soft(), "css": CSS, "allowed_paths": [str(Path(runs_dir).expanduser().absolute())],
            "max_file_size": MAX_UPLOAD, "show_error": True}


def launch_app(runs_dir: str | Path, *, host: str = "127.0.0.1", port: int = 7860,
               auth: tuple[str, str] | None = None, **kwargs: Any):
    """Build and serve the studio; ``kwargs`` go to ``gr.Blocks.launch`` (e.g. prevent_thread_lock)."""
    app = build_app(runs_dir)
    return app, app.launch(server_name=host, server_port=port, auth=auth, **launch_options(runs_dir), **kwargs)

"""``build_app(runs_dir)``: every tab's UI first, then every tab's events; ``launch_app`` serves it.

What a client may read is bounded here: folders under the data roots only (``default_data_roots``), scans
within ``SCAN_FILES`` / ``SCAN_DEPTH``, and with logins each user's own runs and jobs only (``AppContext``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from ..core.data.demo import ELPV_LICENSE, build_elpv_demo
from ..core.data.elpv import build_demo_test_set
from .context import SCAN_DEPTH, SCAN_FILES, AppContext, user_of
from .jobs import JobRegistry
from .paths import DataRoots
from .tabs import TABS
from .widgets import refreshed_runs

__all__ = ["build_app", "launch_options", "launch_app", "default_data_roots", "is_loopback", "MAX_UPLOAD"]

logger = logging.getLogger(__name__)
MAX_UPLOAD = "500mb"
CSS = """
#train-status, #inspect-summary, #test-summary { min-height: 2.5em; }
.gradio-container { max-width: 1500px !important; }
"""


def _demo_test_folder(runs_dir: Path, demo: str) -> str:
    """Held-out labelled ELPV cells for the demo (the Test tab's default), or "" without the demo."""
    if not demo:
        return ""
    try:
        return str(build_demo_test_set(demo, runs_dir / ".cache" / "demo-elpv-test"))
    except (RuntimeError, OSError, ValueError) as error:
        logger.warning("no demo test set (%s)", error)
        return ""


def _demo_folder(runs_dir: Path) -> str:
    """The ELPV demo folder (built on first use), or "" when the elpv-dataset package is missing."""
    try:
        return str(build_elpv_demo(runs_dir / ".cache" / "demo-elpv").root)
    except (RuntimeError, OSError, ValueError) as error:
        logger.warning("no demo folder (%s); the Data tab starts empty", error)
        return ""


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def default_data_roots(host: str) -> list[Path]:
    """Without ``--data-root``: on loopback the user's own home and current folders; on any other address
    none (uploads only), since every client could otherwise name any folder the server can read."""
    return [Path.home(), Path.cwd()] if is_loopback(host) else []


def build_app(runs_dir: str | Path, *, default_folder: str | None = None,
              data_roots: Iterable[str | Path] | None = None, users: Iterable[str] | None = None,
              admins: Iterable[str] = (), scan_files: int = SCAN_FILES, scan_depth: int = SCAN_DEPTH) -> gr.Blocks:
    """The studio. ``runs_dir`` holds every run (one folder each) and the cache of served images;
    ``default_folder`` preselects a data folder (default: the solar-cell demo folder) and, like the uploads
    folder, is always readable; other folders must lie under ``data_roots`` (default: home and current
    folder, as on loopback). ``users`` (the logins) keep each user's runs and jobs apart; ``admins`` see all.
    One scan sees at most ``scan_files`` files and ``scan_depth`` folder levels."""
    runs_dir = Path(runs_dir).expanduser().absolute()
    runs_dir.mkdir(parents=True, exist_ok=True)
    folder = _demo_folder(runs_dir) if default_folder is None else default_folder
    roots = DataRoots.of(default_data_roots("127.0.0.1") if data_roots is None else data_roots).roots
    demo_test = _demo_test_folder(runs_dir, folder) if default_folder is None else ""
    ctx = AppContext(runs_dir=runs_dir, registry=JobRegistry(), default_folder=folder, data_roots=roots,
                     demo_test_folder=demo_test,
                     users=None if users is None else frozenset(users), admins=frozenset(admins),
                     scan_files=scan_files, scan_depth=scan_depth)
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

        def list_runs_api(request: gr.Request = None) -> list[dict]:
            """Finished runs (this user's, with logins), newest first: id, strategy, detector, image size,
            images, stopped early."""
            return [{"run_id": r.id, "strategy": r.strategy, "detector": r.detector, "image_size": r.image_size,
                     "n_images": r.n_images, "stopped": r.stopped, "data": r.data}
                    for r in ctx.runs(user_of(request))]

        gr.api(list_runs_api, api_name="list_runs", concurrency_limit=None)
        _load_runs(ctx)
    app.queue(default_concurrency_limit=2)
    return app


def _load_runs(ctx: AppContext) -> None:
    """Each user's runs in the run pickers on page load: the page config is the same for everyone, so with
    logins it is built with none."""

    def load(inspect_run: str | None, test_run: str | None, export_run: str | None, request: gr.Request):
        return [refreshed_runs(ctx, value, request=request) for value in (inspect_run, test_run, export_run)]

    pickers = [ctx.inspect.run, ctx.test.run, ctx.export.run]
    ctx.blocks.load(load, pickers, pickers, api_visibility="private")


def launch_options(runs_dir: str | Path) -> dict[str, Any]:
    """``launch()`` keywords: theme and CSS (Gradio 6 takes them here), and the only folder served besides
    Gradio's temp folder: the runs folder's cache, where every image and export the page shows is written
    (run folders themselves, with their overrides and image lists, are not served)."""
    cache = Path(runs_dir).expanduser().absolute() / ".cache"
    return {"theme": gr.themes.Soft(), "css": CSS, "allowed_paths": [str(cache)], "max_file_size": MAX_UPLOAD,
            "show_error": True}


def launch_app(runs_dir: str | Path, *, host: str = "127.0.0.1", port: int = 7860,
               auth: Sequence[tuple[str, str]] | None = None, data_roots: Sequence[str | Path] | None = None,
               admins: Sequence[str] = (), scan_files: int = SCAN_FILES, scan_depth: int = SCAN_DEPTH,
               **kwargs: Any):
    """Build and serve the studio; ``data_roots`` None means ``default_data_roots(host)``; with ``auth``
    (user, password) pairs each user sees only their own runs; ``kwargs`` go to ``gr.Blocks.launch``."""
    roots = default_data_roots(host) if data_roots is None else list(data_roots)
    users = [user for user, _ in auth] if auth else None
    app = build_app(runs_dir, data_roots=roots, users=users, admins=admins, scan_files=scan_files,
                    scan_depth=scan_depth)
    logger.info("data roots open to clients: %s (plus uploads and the demo folder); a scan stops after %s files "
                "or %d levels", DataRoots.of(roots).describe(), f"{scan_files:,}", scan_depth)
    if users:
        logger.info("logins: %s; each sees only their own runs%s", ", ".join(users),
                    f" (admins see all: {', '.join(admins)})" if admins else "")
    return app, app.launch(server_name=host, server_port=port, auth=list(auth) if auth else None,
                           **launch_options(runs_dir), **kwargs)

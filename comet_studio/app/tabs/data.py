"""Data tab: pick a folder of images under a data root (or upload images / a zip) and see what was found.

Scans are bounded (files, depth; see ``AppContext.scan_bounds``), show their progress, can be stopped, and
run in their own queue slots (``scans.SCAN_QUEUE``), so two long scans never hold up a third client's page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ...core.data.folder import NotEnoughImagesError, ScanLimitError, ScanStopped
from ...workflows.run import training_folder
from ..components import DataUI
from ..context import AppContext, user_of
from ..media import thumbnail
from ..paths import save_uploads, user_path
from ..scans import SCAN_QUEUE, SCAN_SLOTS
from ..widgets import tab_page, user_errors

__all__ = ["DataUI", "FolderReport", "scan", "create_ui", "bind_events"]

INTRO = ("Choose the folder of images to learn what *normal* looks like from. It may contain some "
         "defective images: that is what CoMet is for. A demo folder of solar cells (mostly good, a "
         "few cracked, labels hidden) is preselected.")

MAX_THUMBS = 48


@dataclass(frozen=True)
class FolderReport:
    """What a scan found: usable images, skipped files with the reason, and gallery thumbnails."""

    root: str
    n_images: int
    skipped: list[list[str]]
    thumbs: list[tuple[str, str]]
    error: str | None = None

    def markdown(self) -> str:
        if self.error:
            return f"**Cannot train on this folder:** {self.error}"
        shown = f" (showing the first {len(self.thumbs)})" if len(self.thumbs) < self.n_images else ""
        return (f"**{self.n_images} images** found in `{self.root}`{shown}; **{len(self.skipped)} skipped**"
                + (" (see the list below for why)." if self.skipped else ".")
                + "\n\nLabels are not needed: CoMet works out which images to trust. Go to **Train** next.")


def scan(ctx: AppContext, text: str, user: str | None = None, *, session: str | None = None,
         progress=None) -> FolderReport:
    """Scan the folder named by ``text`` (an MVTec AD category means its train/ images): it must lie under
    one of the user's data roots, and the scan stops at its bounds, or when ``ctx.stop_scan(session)``."""
    path = user_path(text, roots=ctx.roots(user))
    report = None
    if progress is not None:
        def report(files: int) -> None:
            progress((files, ctx.scan_files), desc=f"scanning {path}: {files:,} files so far", unit="files")
    try:
        with ctx.scan_bounds(session, report) as bounds:
            folder = training_folder(path, bounds)
    except (NotEnoughImagesError, ScanLimitError, ScanStopped) as error:
        return FolderReport(str(path), 0, [], [], error=str(error))
    thumbs = [(thumbnail(p, ctx.cache_dir), Path(p).name) for p in folder.paths[:MAX_THUMBS]]
    skipped = [[s.path, s.reason] for s in folder.skipped]
    return FolderReport(folder.root, len(folder), skipped, thumbs)


def create_ui(ctx: AppContext) -> DataUI:
    with tab_page("1 · Data", "data", INTRO) as tab:
        with gr.Row():
            folder = gr.Textbox(value=ctx.default_folder, label="Folder on this machine", scale=4,
                                placeholder="/path/to/images  (an MVTec AD category uses its train/ folder)",
                                elem_id="data-folder")
            scan_button = gr.Button("Scan folder", variant="primary", scale=1, elem_id="data-scan")
            stop_button = gr.Button("Stop scan", variant="stop", scale=0, min_width=100, elem_id="data-stop")
        roots = gr.Markdown(_roots_note(ctx, None), elem_id="data-roots")
        with gr.Row():
            upload = gr.File(label="...or upload images or a .zip (from a remote browser)", file_count="multiple",
                             file_types=[".zip", "image"], height=110)
            upload_dir = gr.File(label="...or upload a whole folder", file_count="directory", height=110)
        summary = gr.Markdown(elem_id="data-summary")
        gallery = gr.Gallery(label="Images", columns=8, height=360, object_fit="cover", allow_preview=True,
                             elem_id="data-gallery")
        with gr.Accordion("Skipped files", open=False):
            skipped = gr.Dataframe(headers=["file", "reason"], datatype=["str", "str"], interactive=False,
                                   wrap=True)
    ctx.data = DataUI(tab, folder, scan_button, stop_button, roots, upload, upload_dir, summary, skipped, gallery)
    return ctx.data


def _roots_note(ctx: AppContext, user: str | None) -> str:
    return (f"Folders must lie under a data root: {ctx.roots(user).describe()}. A scan stops after "
            f"{ctx.scan_files:,} files or {ctx.scan_depth} folder levels.")


def bind_events(ctx: AppContext) -> None:
    ui = ctx.data

    def show(report: FolderReport):
        return report.markdown(), report.skipped or [], report.thumbs

    @user_errors
    def on_scan(text: str, request: gr.Request, progress=gr.Progress()):
        if not (text or "").strip():
            return "Type the path of a folder of images, or upload some.", [], []
        return show(scan(ctx, text, user_of(request), session=request.session_hash, progress=progress))

    def on_stop(request: gr.Request):
        if ctx.stop_scan(request.session_hash):
            gr.Info("Stopping the scan.")

    @user_errors
    def on_upload(files: list[str] | None, request: gr.Request):
        if not files:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        user = user_of(request)
        folder = save_uploads(list(files), ctx.uploads_for(user))  # a refused upload: user_errors says why
        return (str(folder), *show(scan(ctx, str(folder), user, session=request.session_hash)))

    @user_errors
    def on_load(request: gr.Request):
        # The page's own default folder, not a client's text: a page load never walks a chosen tree.
        user = user_of(request)
        shown = show(scan(ctx, ctx.default_folder, user)) if ctx.default_folder else \
            ("Type the path of a folder of images, or upload some.", [], [])
        return (*shown, _roots_note(ctx, user))

    outputs = [ui.summary, ui.skipped, ui.gallery]
    scans = {"api_visibility": "private", "concurrency_id": SCAN_QUEUE, "concurrency_limit": SCAN_SLOTS}
    ui.scan.click(on_scan, ui.folder, outputs, **scans)
    ui.folder.submit(on_scan, ui.folder, outputs, **scans)
    ui.stop.click(on_stop, None, None, api_visibility="private", concurrency_limit=None)
    for widget in (ui.upload, ui.upload_dir):
        widget.upload(on_upload, widget, [ui.folder, *outputs], **scans)
    ctx.blocks.load(on_load, None, [*outputs, ui.roots], api_visibility="private")
    _register_api(ctx)


def _register_api(ctx: AppContext) -> None:
    def scan_folder_api(folder: str, request: gr.Request = None) -> dict:
        """Scan a folder under a data root as the Data tab does: {root, n_images, n_skipped, error}. The
        scan stops at its bounds (files, depth) with the reason in "error"; /stop_scan stops it."""
        report = scan(ctx, folder, user_of(request), session=request.session_hash if request else None)
        return {"root": report.root, "n_images": report.n_images, "n_skipped": len(report.skipped),
                "error": report.error}

    def stop_scan_api(request: gr.Request = None) -> dict:
        """Stop this client's running scan (Data tab, /scan_folder or /predict); {"stopped": bool}."""
        return {"stopped": ctx.stop_scan(request.session_hash if request else None)}

    def data_roots_api(request: gr.Request = None) -> dict:
        """The folders this client may name, and the bounds of one scan."""
        return {"roots": [str(r) for r in ctx.roots(user_of(request)).roots], "max_files": ctx.scan_files,
                "max_depth": ctx.scan_depth}

    gr.api(user_errors(scan_folder_api), api_name="scan_folder", concurrency_id=SCAN_QUEUE,
           concurrency_limit=SCAN_SLOTS)
    gr.api(stop_scan_api, api_name="stop_scan", concurrency_limit=None)
    gr.api(data_roots_api, api_name="data_roots", concurrency_limit=None)

"""Data tab: pick a folder of images on this machine (or upload images / a zip) and see what was found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ...core.data.folder import NotEnoughImagesError
from ...core.run import training_folder
from ..context import AppContext
from ..media import thumbnail
from ..paths import PathError, save_uploads, user_path
from ..widgets import user_errors

__all__ = ["DataUI", "FolderReport", "scan", "create_ui", "bind_events"]

MAX_THUMBS = 48


@dataclass
class DataUI:
    tab: gr.Tab
    folder: gr.Textbox
    scan: gr.Button
    upload: gr.File
    upload_dir: gr.File
    summary: gr.Markdown
    skipped: gr.Dataframe
    gallery: gr.Gallery


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


def scan(ctx: AppContext, text: str) -> FolderReport:
    """Scan the folder named by ``text`` (an MVTec AD category means its train/ images)."""
    path = user_path(text)
    try:
        folder = training_folder(path)
    except NotEnoughImagesError as error:
        return FolderReport(str(path), 0, [], [], error=str(error))
    thumbs = [(thumbnail(p, ctx.cache_dir), Path(p).name) for p in folder.paths[:MAX_THUMBS]]
    skipped = [[s.path, s.reason] for s in folder.skipped]
    return FolderReport(folder.root, len(folder), skipped, thumbs)


def create_ui(ctx: AppContext) -> DataUI:
    with gr.Tab("1 · Data", id="data") as tab:
        gr.Markdown("Choose the folder of images to learn what *normal* looks like from. It may contain some "
                    "defective images: that is what CoMet is for. A demo folder of solar cells (mostly good, a "
                    "few cracked, labels hidden) is preselected.")
        with gr.Row():
            folder = gr.Textbox(value=ctx.default_folder, label="Folder on this machine", scale=4,
                                placeholder="/path/to/images  (an MVTec AD category uses its train/ folder)",
                                elem_id="data-folder")
            scan_button = gr.Button("Scan folder", variant="primary", scale=1, elem_id="data-scan")
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
    ctx.data = DataUI(tab, folder, scan_button, upload, upload_dir, summary, skipped, gallery)
    return ctx.data


def bind_events(ctx: AppContext) -> None:
    ui = ctx.data

    def show(report: FolderReport):
        return report.markdown(), report.skipped or [], report.thumbs

    @user_errors
    def on_scan(text: str):
        if not (text or "").strip():
            return "Type the path of a folder of images, or upload some.", [], []
        return show(scan(ctx, text))

    @user_errors
    def on_upload(files: list[str] | None):
        if not files:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            folder = save_uploads(list(files), ctx.uploads_dir)
        except PathError as error:
            raise gr.Error(str(error)) from error
        return (str(folder), *show(scan(ctx, str(folder))))

    outputs = [ui.summary, ui.skipped, ui.gallery]
    ui.scan.click(on_scan, ui.folder, outputs, api_visibility="private")
    ui.folder.submit(on_scan, ui.folder, outputs, api_visibility="private")
    for widget in (ui.upload, ui.upload_dir):
        widget.upload(on_upload, widget, [ui.folder, *outputs], api_visibility="private")
    ctx.blocks.load(on_scan, ui.folder, outputs, api_visibility="private")


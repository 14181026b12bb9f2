"""Export tab: the whole run as one zip (model, per-sample weights with the current overrides, history)."""

from __future__ import annotations

import csv
import io
import secrets
import zipfile
from pathlib import Path

import gradio as gr

from ...core.io.atomic import atomic_path
from ..components import ExportUI
from ..context import AppContext, user_of
from ..runs import with_overrides
from ..widgets import run_dropdown, run_refresher, tab_page, user_errors

__all__ = ["ExportUI", "EXPORTED", "export_run", "create_ui", "bind_events"]

INTRO = ("Download a run: the model, every image's score and weight with your overrides, the "
         "training history and the configs, in one zip.")

EXPORTED = ("model/model.safetensors", "model/model.json", "overrides.json", "history.json", "run.json",
            "skipped.csv")
README = """CoMet Studio run {run_id}

model/            the trained head and post-processing (safetensors + model.json); load it with
                  comet_studio.AnomalyModel.load("model") or `comet-studio predict --model model ...`
samples.csv       every training image: anomaly score, confidence weight, rejected, override, validation
overrides.json    the user's overrides (path -> good | exclude), honoured by the next training
history.json      per-round losses, lambda and IQR threshold
run.json          configs, data folder, timings, device
skipped.csv       files that could not be used, with the reason
"""


def _samples_with_overrides(run_dir: Path) -> str:
    """samples.csv with its override column set from overrides.json (which may be newer)."""
    with open(run_dir / "samples.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = with_overrides(run_dir, list(reader))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def export_run(ctx: AppContext, run_id: str, user: str | None = None) -> Path:
    """Write ``<cache>/exports/<random>/comet-run-<id>.zip`` and return its path (the random folder: a
    served file's address cannot be guessed from a run id)."""
    run_dir = ctx.run_dir(run_id, user)
    missing = [name for name in ("model/model.safetensors", "samples.csv") if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"run {run_id} is incomplete (missing {', '.join(missing)}); it may still be "
                                f"training or it failed")
    target = ctx.cache_dir / "exports" / secrets.token_hex(8) / f"comet-run-{run_id}.zip"
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in EXPORTED:
            if (run_dir / name).exists():
                archive.write(run_dir / name, f"{run_id}/{name}")
        archive.writestr(f"{run_id}/samples.csv", _samples_with_overrides(run_dir))
        archive.writestr(f"{run_id}/README.txt", README.format(run_id=run_id))
    return target


def create_ui(ctx: AppContext) -> ExportUI:
    with tab_page("6 · Export", "export", INTRO) as tab:
        with gr.Row():
            run = run_dropdown(ctx, "Run", "export-run")
            build = gr.Button("Build zip", variant="primary", elem_id="export-build")
        file = gr.File(label="Run archive", interactive=False, elem_id="export-file")
        summary = gr.Markdown(label="contents")
    ctx.export = ExportUI(tab, run, build, file, summary)
    return ctx.export


def bind_events(ctx: AppContext) -> None:
    ui = ctx.export

    @user_errors
    def on_build(run_id: str, request: gr.Request):
        if not run_id:
            raise gr.Error("no run to export yet")
        path = export_run(ctx, run_id, user_of(request))
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        listing = "\n".join(f"- `{name}`" for name in names)
        return str(path), f"{path.stat().st_size / 1024:.0f} KiB:\n{listing}"

    ui.build.click(on_build, ui.run, [ui.file, ui.summary], api_name="export_run")
    ui.tab.select(run_refresher(ctx), ui.run, ui.run, api_visibility="private")

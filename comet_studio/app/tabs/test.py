"""Test tab: score new images with a trained run; heatmaps, pass/fail at a threshold, and metrics when the
folder is an MVTec AD category (ground truth in test/ and ground_truth/)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ...core.data.images import read_image
from ...core.data.mvtec import LabelledImage, is_mvtec_category, load_mvtec
from ...core.evaluation import evaluate_model
from ...workflows.predict.pipeline import iter_predictions
from ...viz.overlays import overlay_heatmap
from ...viz.evaluation import roc_figure
from ...viz.training import empty_figure
from ..components import TestUI
from ..context import AppContext, user_of
from ..media import save_image
from ..paths import user_path
from ..runs import run_model
from ..scans import SCAN_QUEUE, SCAN_SLOTS, listed_images
from ..widgets import run_dropdown, run_refresher, tab_page, user_errors

__all__ = ["TestUI", "gather_inputs", "score_images", "results_table", "create_ui", "bind_events"]

MAX_IMAGES = 300
SHOW_SIDE = 384


def gather_inputs(ctx: AppContext, files: list[str] | None, folder_text: str, user: str | None = None, *,
                  session: str | None = None) -> tuple[list[str], list[LabelledImage] | None, str]:
    """(paths, labelled items or None, note) from uploaded files and/or a typed path under one of the
    user's data roots (scanned within the scan bounds). A typed MVTec AD category (and no uploads) gives
    its labelled test images; anything else has no ground truth."""
    paths: list[str] = [str(f) for f in files or []]
    items: list[LabelledImage] | None = None
    notes = []
    if (folder_text or "").strip():
        path = user_path(folder_text, kind="any", roots=ctx.roots(user))
        if path.is_dir() and is_mvtec_category(path):
            with ctx.scan_bounds(session) as bounds:  # the category's own listing is not bounded
                listed_images(path / "test", bounds)
            category = list(load_mvtec(path).test)
            paths += [i.path for i in category]
            items = None if files else category
            notes.append(f"MVTec AD category: {len(category)} labelled test images")
        else:
            with ctx.scan_bounds(session) as bounds:
                found, skipped = listed_images(path, bounds)
            paths += found
            if skipped:
                notes.append(f"{len(skipped)} non-image files skipped")
    if not paths:
        raise ValueError("no images: upload some or type a folder path (an MVTec AD category gives metrics)")
    if len(paths) > MAX_IMAGES:
        # An even spread, so a capped MVTec category keeps every defect type.
        keep = np.linspace(0, len(paths) - 1, MAX_IMAGES).round().astype(int)
        notes.append(f"scored {MAX_IMAGES} of {len(paths)} images, evenly spread (use `comet-studio predict` for all)")
        paths = [paths[k] for k in keep]
        items = [items[k] for k in keep] if items is not None else None
    return paths, items, "; ".join(notes)


def _shrunk(image: np.ndarray) -> np.ndarray:
    picture = Image.fromarray(image)
    picture.thumbnail((SHOW_SIDE, SHOW_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def _row(out_dir: Path, k: int, path: str, image: np.ndarray, score: float, heatmap: np.ndarray,
         truth: int | None) -> dict[str, Any]:
    small = _shrunk(image)
    return {"name": Path(path).name, "path": path, "score": float(score), "truth": truth, "error": "",
            "image": str(save_image(small, out_dir / f"{k:04d}_image.png")),
            "overlay": str(save_image(overlay_heatmap(small, heatmap), out_dir / f"{k:04d}_heatmap.png"))}


def score_images(ctx: AppContext, run_id: str, paths: list[str], items: list[LabelledImage] | None,
                 progress=None, user: str | None = None) -> tuple[list[dict[str, Any]], dict[str, float] | None]:
    """Score ``paths`` with the run's model (a run ``user`` may see): one JSON-ready row per image (image and
    heatmap overlay written under the cache). With labelled ``items`` (both classes present) also
    ``evaluate_model``'s metrics, computed from the same features."""
    ctx.run_dir(run_id, user)
    model = run_model(ctx.registry, ctx.runs_dir, run_id)
    out_dir = ctx.cache_dir / "predictions" / secrets.token_hex(6)
    report = (lambda _stage, done, total: progress((done, total), desc="scoring")) if progress else None
    labels = [i.label for i in items] if items is not None else []
    if items is not None and 0 < sum(labels) < len(labels):
        features = model.extract_views(paths, progress=report)  # one tensor, or one per test-time view
        prediction = model.predict_features(features)
        rows = [_row(out_dir, k, p, read_image(p), prediction.image_score[k], prediction.anomaly_map[k], items[k].label)
                for k, p in enumerate(paths)]
        return rows, evaluate_model(model, items, features=features)
    rows: list[dict[str, Any]] = []
    for good, prediction, bad, images in iter_predictions(model, paths, chunk=32):
        rows += [_row(out_dir, len(rows) + i, p, images[i], prediction.image_score[i], prediction.anomaly_map[i], None)
                 for i, p in enumerate(good)]
        rows += [{"name": Path(p).name, "path": p, "score": None, "truth": None, "error": reason,
                  "image": None, "overlay": None} for p, reason in bad]
        if report is not None:
            report("scoring", len(rows), len(paths))
    return rows, None


def results_table(rows: list[dict[str, Any]], threshold: float) -> list[list[Any]]:
    """(file, score, verdict, ground truth) rows; verdict = anomalous when score > threshold."""
    table = []
    for r in rows:
        truth = "" if r["truth"] is None else ("anomalous" if r["truth"] else "good")
        if r["score"] is None:
            table.append([r["name"], None, f"unreadable: {r['error']}", truth])
        else:
            verdict = "FAIL (anomalous)" if r["score"] > threshold else "pass"
            table.append([r["name"], round(r["score"], 4), verdict, truth])
    return table


def _gallery(rows: list[dict[str, Any]], threshold: float) -> list[tuple[str, str]]:
    return [(r["overlay"], f"{'FAIL' if r['score'] > threshold else 'pass'} {r['score']:.3f} · {r['name']}")
            for r in rows if r["score"] is not None]


def _metrics_markdown(metrics: dict[str, float] | None, rows: list[dict[str, Any]], threshold: float,
                      note: str) -> str:
    scored = [r for r in rows if r["score"] is not None]
    failed = sum(r["score"] > threshold for r in scored)
    text = f"**{len(scored)} images scored**, {failed} above the threshold {threshold:.2f}"
    text += f" ({note})" if note else ""
    if metrics:
        text += (f"  \nimage AUROC **{metrics['image_auroc']:.3f}** · pixel AUROC **{metrics['pixel_auroc']:.3f}**"
                 f" · AUPRO **{metrics['aupro']:.3f}** · F1-max {metrics['image_f1_max']:.3f} "
                 f"({metrics['n_anomalous']} anomalous of {metrics['n_test']})")
    return text


def _roc(rows: list[dict[str, Any]], metrics: dict[str, float] | None, threshold: float):
    if not metrics:
        return empty_figure("ROC needs labelled images: type the path of an MVTec AD category", 360)
    scored = [r for r in rows if r["score"] is not None]
    return roc_figure([r["truth"] for r in scored], [r["score"] for r in scored], auroc=metrics["image_auroc"],
                      threshold=threshold)


def create_ui(ctx: AppContext) -> TestUI:
    with tab_page("5 · Test", "test") as tab:
        with gr.Row():
            run = run_dropdown(ctx, "Run", "test-run")
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, elem_id="test-threshold",
                                  label="Threshold (scores are normalised: 0.5 = the run's IQR threshold)")
        with gr.Row():
            files = gr.File(label="Test images", file_count="multiple", file_types=["image"], height=120)
            folder = gr.Textbox(label="...or a folder / image / MVTec AD category on this machine"
                                + (" (preset: the demo's labelled test set, held-out solar cells)"
                                   if ctx.demo_test_folder else ""),
                                value=ctx.demo_test_folder,
                                placeholder="/data/mvtec/bottle  (an MVTec category adds AUROC, pixel AUROC, AUPRO)")
        score = gr.Button("Score", variant="primary", elem_id="test-score")
        summary = gr.Markdown(label="summary", elem_id="test-summary")
        with gr.Row():
            slider = gr.ImageSlider(label="Image | heatmap (click a result below)", type="filepath",
                                    elem_id="test-slider")
            roc = gr.Plot(show_label=False)
        gallery = gr.Gallery(label="Heatmaps", columns=6, height=360, object_fit="cover", allow_preview=False)
        table = gr.Dataframe(headers=["file", "score", "verdict", "ground truth"], interactive=False, label="results",
                             elem_id="test-table")
        results = gr.State([])
    ctx.test = TestUI(tab, run, files, folder, threshold, score, slider, gallery, summary, table, roc, results)
    return ctx.test


def bind_events(ctx: AppContext) -> None:
    ui = ctx.test

    def render(rows: list[dict[str, Any]], metrics, note: str, threshold: float):
        first = next((r for r in rows if r["score"] is not None), None)
        slider = (first["image"], first["overlay"]) if first else None
        return (slider, _gallery(rows, threshold), _metrics_markdown(metrics, rows, threshold, note),
                results_table(rows, threshold), _roc(rows, metrics, threshold))

    @user_errors
    def on_score(run_id: str, files: list[str] | None, folder: str, threshold: float, request: gr.Request,
                 progress=gr.Progress()):
        if not run_id:
            raise gr.Error("no trained run: train one on the Train tab first")
        user = user_of(request)
        ctx.run_dir(run_id, user)  # an unknown or another user's run is refused before any scan
        paths, items, note = gather_inputs(ctx, files, folder, user, session=request.session_hash)
        rows, metrics = score_images(ctx, run_id, paths, items, progress, user)
        state = {"rows": rows, "metrics": metrics, "note": note}
        return (*render(rows, metrics, note, threshold), state)

    def on_threshold(state: dict, threshold: float):
        if not state:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return render(state["rows"], state["metrics"], state["note"], threshold)

    def on_select(state: dict, evt: gr.SelectData):
        scored = [r for r in state["rows"] if r["score"] is not None]
        row = scored[evt.index]
        return row["image"], row["overlay"]

    outputs = [ui.slider, ui.gallery, ui.summary, ui.table, ui.roc]
    ui.score.click(on_score, [ui.run, ui.files, ui.folder, ui.threshold], [*outputs, ui.results],
                   api_name="predict", concurrency_id=SCAN_QUEUE, concurrency_limit=SCAN_SLOTS)
    ui.threshold.release(on_threshold, [ui.results, ui.threshold], outputs, api_visibility="private")
    ui.gallery.select(on_select, ui.results, ui.slider, api_visibility="private")
    ui.tab.select(run_refresher(ctx), ui.run, ui.run, api_visibility="private")

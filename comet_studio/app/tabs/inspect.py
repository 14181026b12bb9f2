"""Inspect tab: every training image with its anomaly score and confidence weight; overrides.

Weights and scores come from the run's samples.csv; a click shows the image large next to its heatmap. The
user can force an image "good" (weight 1) or "exclude" it; the choice is written to the run's overrides.json
at once, and a retrain (here, or on the Train tab) honours it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ...core.config import ModelConfig, TrainConfig, config_from_dict
from ...core.data.demo import hidden_defects_found, read_demo_folder
from ...core.data.images import read_image
from ...workflows.run import read_distrusted, read_overrides, read_samples, write_overrides
from ...viz.overlays import outline_patches, overlay_heatmap
from ...viz.weights import score_distribution
from ..components import InspectUI
from ..context import AppContext, user_of
from ..jobs import Job
from ..media import preview, save_image
from ..paths import PathError
from ..runs import read_run, run_model, with_overrides
from ..training import start_training
from ..widgets import run_dropdown, run_refresher, tab_page, user_errors

__all__ = ["InspectUI", "sample_rows", "select_rows", "set_override", "sample_view", "retrain",
           "create_ui", "bind_events"]

ORDERS = ("lowest weight first", "highest score first", "file name")
FILTERS = ("all", "weight below 1", "rejected or excluded", "overridden")
CHOICES = {"auto (CoMet weight)": "auto", "force good (weight 1)": "good", "exclude (weight 0)": "exclude"}
MAX_SHOWN = 150


def sample_rows(ctx: AppContext, run_id: str, user: str | None = None) -> list[dict[str, Any]]:
    """samples.csv of a run with the current overrides (overrides.json may be newer than samples.csv)."""
    run_dir = ctx.run_dir(run_id, user)
    rows = with_overrides(run_dir, read_samples(run_dir))
    for row in rows:
        row["name"] = Path(row["path"]).name
    return rows


def select_rows(rows: list[dict[str, Any]], order: str, show: str) -> list[dict[str, Any]]:
    """Filter (``FILTERS``) then sort (``ORDERS``) the sample rows."""
    keep = {
        "all": lambda r: True,
        "weight below 1": lambda r: r["weight"] < 1.0,
        "rejected or excluded": lambda r: r["rejected"] or r["override"] == "exclude",
        "overridden": lambda r: bool(r["override"]),
    }[show]
    key = {
        "lowest weight first": lambda r: (r["weight"], -r["score"]),
        "highest score first": lambda r: -r["score"],
        "file name": lambda r: r["name"],
    }[order]
    return sorted((r for r in rows if keep(r)), key=key)


def _training_paths(run_dir: Path) -> set[str]:
    return {row["path"] for row in read_samples(run_dir)}


def set_override(ctx: AppContext, run_id: str, path: str, choice: str, user: str | None = None) -> dict[str, str]:
    """Set ("good" / "exclude") or clear ("auto") the override of one training image; saved at once."""
    if choice not in ("auto", "good", "exclude"):
        raise ValueError(f"override must be 'auto', 'good' or 'exclude', got {choice!r}")
    run_dir = ctx.run_dir(run_id, user)
    if path not in _training_paths(run_dir):
        raise PathError(f"{path!r} is not a training image of run {run_id}")
    overrides = read_overrides(run_dir)
    if choice == "auto":
        overrides.pop(path, None)
    else:
        overrides[path] = choice
    write_overrides(run_dir, overrides)
    return overrides


def sample_view(ctx: AppContext, run_id: str, path: str, user: str | None = None) -> tuple[str, str, float]:
    """(image, heatmap overlay, normalised score) of one training image of the run; the images are written
    under the cache so the page can show them."""
    run_dir = ctx.run_dir(run_id, user)
    if path not in _training_paths(run_dir):
        raise PathError(f"{path!r} is not a training image of run {run_id}")
    model = run_model(ctx.registry, ctx.runs_dir, run_id)
    prediction = model.predict([path])
    image = Image.fromarray(read_image(path))
    image.thumbnail((512, 512), Image.Resampling.LANCZOS)
    overlay = overlay_heatmap(np.asarray(image), prediction.anomaly_map[0])
    distrusted = read_distrusted(run_dir)
    if distrusted is not None:  # outline the patches the memory's first opinion distrusted
        index = [r["path"] for r in read_samples(run_dir)].index(path)
        overlay = outline_patches(overlay, distrusted[index])
    name = hashlib.sha1(f"{run_id}|{path}".encode()).hexdigest()[:20]
    target = save_image(overlay, ctx.cache_dir / "heatmaps" / run_id / f"{name}.png")
    return preview(path, ctx.cache_dir), str(target), float(prediction.image_score[0])


def retrain(ctx: AppContext, run_id: str, user: str | None = None) -> Job:
    """A new training run (of ``user``) with this run's data, configs and current overrides."""
    run_dir = ctx.run_dir(run_id, user)
    meta = json.loads((run_dir / "run.json").read_text())
    model_config = config_from_dict(ModelConfig, meta["model"])
    train_config = config_from_dict(TrainConfig, meta["train"])
    return start_training(ctx, meta["data"], model_config, train_config, overrides_from=run_id, user=user)


def _caption(row: dict[str, Any]) -> str:
    flags = {"good": " · forced good", "exclude": " · excluded"}.get(row["override"], "")
    rejected = " · rejected" if row["rejected"] else ""
    return f"w {row['weight']:.2f}{rejected}{flags} · {row['name']}"


def _summary(rows: list[dict[str, Any]], run_id: str, threshold: float) -> str:
    weights = np.array([r["weight"] for r in rows])
    n_override = sum(bool(r["override"]) for r in rows)
    text = (f"Run `{run_id}`: **{len(rows)} training images** · IQR threshold {threshold:.4g} · "
            f"**{int((weights < 1).sum())}** down-weighted · {sum(r['rejected'] for r in rows)} rejected · "
            f"**{n_override}** overrides (saved; the next training with *Retrain* or *Apply the overrides "
            f"of run* honours them)")
    return text + _answer_key_line(rows)


def _answer_key_line(rows: list[dict[str, Any]]) -> str:
    """On the demo folder (its answer key lies beside it): how many hidden defective cells the run found."""
    if not rows:
        return ""
    demo = read_demo_folder(Path(rows[0]["path"]).parent)
    if demo is None or not demo.defective:
        return ""
    paths = [r["path"] for r in rows]
    found, hidden = hidden_defects_found(paths, np.array([r["weight"] for r in rows]),
                                         np.array([r["score"] for r in rows]), demo.defective)
    return (f"\n\n**Demo answer key:** {found} of the {hidden} hidden defective cells are among the {hidden} "
            f"least-trusted images (lowest weight first). The key lies beside the folder; training never saw it.")


def create_ui(ctx: AppContext) -> InspectUI:
    with tab_page("3 · Inspect", "inspect") as tab:
        with gr.Row():
            run = run_dropdown(ctx, "Run", "inspect-run")
            order = gr.Radio(list(ORDERS), value=ORDERS[0], label="Sort")
            show = gr.Radio(list(FILTERS), value=FILTERS[0], label="Show")
        summary = gr.Markdown(elem_id="inspect-summary")
        gr.Markdown("Training scores against the IQR threshold; colour = confidence weight.")
        plot = gr.Plot(show_label=False)
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Training images (click one)", columns=6, height=560,
                                     object_fit="cover", allow_preview=False, elem_id="inspect-gallery")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Image | heatmap", type="filepath", elem_id="inspect-slider")
                detail = gr.Markdown("Click an image to see it with its heatmap; red boxes: the patches the memory's "
                                     "first opinion distrusted.")
                override = gr.Radio(list(CHOICES), label="Override for the next training", interactive=True)
                retrain_button = gr.Button("Retrain with these overrides", variant="primary")
                message = gr.Markdown()
        shown = gr.State([])
        selected = gr.State("")
    ctx.inspect = InspectUI(tab, run, order, show, summary, plot, gallery, shown, selected, slider, detail,
                            override, retrain_button, message)
    return ctx.inspect


def bind_events(ctx: AppContext) -> None:
    ui = ctx.inspect

    @user_errors
    def on_show(run_id: str | None, order: str, show: str, selected: str, request: gr.Request):
        if not run_id:
            return "No finished run yet: train one on the **Train** tab.", None, [], []
        user = user_of(request)
        rows = sample_rows(ctx, run_id, user)
        info = read_run(ctx.run_dir(run_id, user))
        chosen = select_rows(rows, order, show)[:MAX_SHOWN]
        names = [r["name"] for r in rows]
        index = next((i for i, r in enumerate(rows) if r["path"] == selected), None)
        figure = score_distribution([r["score"] for r in rows], [r["weight"] for r in rows], info.threshold,
                                    names=names, selected=index)
        gallery = [(preview(r["path"], ctx.cache_dir, 192), _caption(r)) for r in chosen]
        return _summary(rows, run_id, info.threshold), figure, gallery, [r["path"] for r in chosen]

    @user_errors
    def on_select(run_id: str, shown: list[str], evt: gr.SelectData, request: gr.Request):
        path = shown[evt.index]
        user = user_of(request)
        row = next(r for r in sample_rows(ctx, run_id, user) if r["path"] == path)
        image, overlay, score = sample_view(ctx, run_id, path, user)
        detail = (f"**{row['name']}**  \nweight **{row['weight']:.3f}** · training score {row['score']:.4g} · "
                  f"normalised score {score:.3f} (0.5 = threshold)"
                  + (" · **rejected**" if row["rejected"] else "") + f"  \n`{path}`")
        choice = {"good": "force good (weight 1)", "exclude": "exclude (weight 0)"}.get(row["override"],
                                                                                       "auto (CoMet weight)")
        return path, (image, overlay), detail, choice

    @user_errors
    def on_override(run_id: str, path: str, label: str, order: str, show: str, request: gr.Request):
        if not path:
            raise gr.Error("click an image first")
        set_override(ctx, run_id, path, CHOICES[label], user_of(request))
        gr.Info(f"Saved: {Path(path).name} -> {CHOICES[label]}")
        return on_show(run_id, order, show, path, request)

    @user_errors
    def on_retrain(run_id: str, request: gr.Request):
        job = retrain(ctx, run_id, user_of(request))
        return f"Started training job `{job.id}` (run `{job.run_dir.name}`) with this run's overrides: " \
               f"follow it on the **Train** tab."

    show_inputs = [ui.run, ui.order, ui.show, ui.selected]
    show_outputs = [ui.summary, ui.plot, ui.gallery, ui.shown]
    for control in (ui.run, ui.order, ui.show):
        control.input(on_show, show_inputs, show_outputs, api_visibility="private")
    ui.gallery.select(on_select, [ui.run, ui.shown], [ui.selected, ui.slider, ui.detail, ui.override],
                      api_visibility="private")
    ui.override.input(on_override, [ui.run, ui.selected, ui.override, ui.order, ui.show], show_outputs,
                      api_visibility="private")
    ui.retrain.click(on_retrain, ui.run, ui.message, api_visibility="private")
    ui.tab.select(run_refresher(ctx), ui.run, ui.run, api_visibility="private") \
        .then(on_show, show_inputs, show_outputs, api_visibility="private")

    def run_samples(run_id: str, request: gr.Request = None) -> list[dict]:
        """Every training image of a run: image (its path on the server), score, weight, rejected,
        validation, override. (Not "path": gradio_client would try to download such a dict as a file.)"""
        return [{"image": r["path"], **{k: r[k] for k in ("score", "weight", "rejected", "validation", "override")}}
                for r in sample_rows(ctx, run_id, user_of(request))]

    def set_override_api(run_id: str, path: str, choice: str, request: gr.Request = None) -> dict:
        """Force a training image "good", "exclude" it, or go back to "auto"; returns all overrides."""
        return set_override(ctx, run_id, path, choice, user_of(request))

    gr.api(user_errors(run_samples), api_name="run_samples", concurrency_limit=None)
    gr.api(user_errors(set_override_api), api_name="set_override")

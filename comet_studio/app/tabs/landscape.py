"""Loss landscape tab: a filter-normalised 2-D slice of the training loss around a run's trained head,
computed in the background; two runs (e.g. baseline and CoMet) side by side on one colour scale."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from ...core.training.landscape import LandscapeConfig, loss_landscape
from ...viz.landscape import LandscapePanel, landscape_figure
from ...viz.training import empty_figure
from ..components import LandscapeUI
from ..context import AppContext, user_of
from ..jobs import Job
from ..paths import resolve_run
from ..runs import read_run, run_features, run_model
from ..widgets import tab_page, user_errors

__all__ = ["LandscapeUI", "start_landscape", "default_pair", "create_ui", "bind_events"]

INTRO = ("Training loss on a 2-D slice through the trained head's weights (Li et al. 2018: two random "
         "directions, each filter scaled to the trained filter's norm). Pick two runs, e.g. a "
         "baseline and a CoMet run, to compare them on one colour scale.")


def default_pair(ctx: AppContext, user: str | None = None) -> tuple[str | None, str]:
    """(A, B): the newest baseline run and the newest other run when both exist, else the newest run."""
    runs = ctx.runs(user)
    if not runs:
        return None, ""
    baseline = next((r for r in runs if r.strategy == "baseline"), None)
    other = next((r for r in runs if r.strategy != "baseline"), None)
    if baseline and other:
        return baseline.id, other.id
    return runs[0].id, ""


def _landscape(ctx: AppContext, job: Job, run_id: str, config: LandscapeConfig, stage: str) -> dict[str, Any]:
    key = ("landscape", run_id, config)
    cached = ctx.registry.cache_get(key)
    if cached is not None:
        return cached
    job.on_progress(f"{stage}: features", 0, 1)
    model = run_model(ctx.registry, ctx.runs_dir, run_id)
    features = run_features(ctx.registry, ctx.runs_dir, run_id)
    result = loss_landscape(model.inference_.head, features, config, device=model.device_, stop=job.stop,
                            progress=lambda _stage, done, total: job.on_progress(stage, done, total))
    info = read_run(resolve_run(ctx.runs_dir, run_id))
    panel = {"run_id": run_id, "title": f"{info.strategy} · {run_id} · centre loss {result.center_loss:.4g}",
             "alphas": result.alphas.tolist(), "betas": result.betas.tolist(), "losses": result.losses.tolist(),
             "center_loss": result.center_loss, "n_images": result.n_images}
    ctx.registry.cache_put(key, panel)
    return panel


def start_landscape(ctx: AppContext, run_ids: list[str], config: LandscapeConfig, user: str | None = None) -> Job:
    """A background job (of ``user``, on runs this user may see) computing the landscape of each run (one or
    two); its result is a list of panels (JSON-ready: alphas, betas, losses, title)."""
    run_ids = [r for r in dict.fromkeys(run_ids) if r]
    if not run_ids:
        raise ValueError("choose at least one run")
    for run_id in run_ids:
        ctx.run_dir(run_id, user)

    def target(job: Job) -> list[dict[str, Any]]:
        return [_landscape(ctx, job, run_id, config, f"run {k + 1}/{len(run_ids)}")
                for k, run_id in enumerate(run_ids)]

    return ctx.registry.start("landscape", f"landscape {' vs '.join(run_ids)}", target, owner=user)


def _figure(panels: list[dict[str, Any]], log_scale: bool):
    return landscape_figure([LandscapePanel(p["title"], np.array(p["alphas"]), np.array(p["betas"]),
                                            np.array(p["losses"])) for p in panels], log_scale=log_scale)


def _status(snapshot: dict[str, Any]) -> str:
    if snapshot["status"] == "running":
        progress = f" {snapshot['done']}/{snapshot['total']}" if snapshot["total"] else ""
        eta = f" · ETA {snapshot['eta_seconds']:.0f} s" if snapshot["eta_seconds"] is not None else ""
        return f"**Computing** {snapshot['stage']}{progress} grid points{eta}"
    if snapshot["status"] == "failed":
        return f"**Failed:** {snapshot['error']}"
    if snapshot["status"] == "stopped":
        return "**Stopped.**"
    return (f"**Done** in {snapshot['elapsed_seconds']:.0f} s. The centre (x) is the trained model; a wide, flat "
            f"basin means small weight changes barely change the loss.")


def create_ui(ctx: AppContext) -> LandscapeUI:
    with tab_page("4 · Loss landscape", "landscape", INTRO) as tab:
        with gr.Row():
            run_a = gr.Dropdown(label="Run A", allow_custom_value=True, elem_id="landscape-run-a")
            run_b = gr.Dropdown(label="Run B (optional)", allow_custom_value=True, elem_id="landscape-run-b")
        with gr.Row():
            grid = gr.Slider(5, 31, value=11, step=2, label="Grid points per axis")
            max_images = gr.Slider(4, 256, value=32, step=4, label="Training images used (seeded subset)")
            log_scale = gr.Checkbox(False, label="log10 loss")
        with gr.Row():
            start = gr.Button("Compute", variant="primary", elem_id="landscape-start")
            stop = gr.Button("Stop", variant="stop")
        status = gr.Markdown()
        plot = gr.Plot(show_label=False, elem_id="landscape-plot")
        timer = gr.Timer(1.0, active=False)
        job = gr.State(None)
    ctx.landscape = LandscapeUI(tab, run_a, run_b, grid, max_images, log_scale, start, stop, status, plot, timer,
                                job)
    return ctx.landscape


def bind_events(ctx: AppContext) -> None:
    ui = ctx.landscape
    registry = ctx.registry

    def refresh(run_a: str | None, run_b: str | None, request: gr.Request):
        user = user_of(request)
        choices = ctx.run_choices(user)
        ids = [value for _, value in choices]
        default_a, default_b = default_pair(ctx, user)
        a = run_a if run_a in ids else default_a
        b = run_b if run_b in ids or run_b == "" and run_a in ids else default_b
        latest = ctx.latest_job("landscape", user)
        return (gr.Dropdown(choices=choices, value=a), gr.Dropdown(choices=[("(none)", "")] + choices, value=b),
                latest.id if latest else None)

    def view(job_id: str | None, log_scale: bool, request: gr.Request):
        try:
            job = ctx.job(job_id, user_of(request)) if job_id else None
        except KeyError:
            job = None
        if job is None:
            return "", empty_figure("choose runs and press Compute", 500), gr.Timer(active=False)
        snapshot = job.snapshot()
        figure = _figure(job.result, log_scale) if snapshot["status"] == "done" else gr.skip()
        return _status(snapshot), figure, gr.Timer(active=job.active)

    @user_errors
    def on_start(run_a: str, run_b: str, grid: float, max_images: float, log_scale: bool, request: gr.Request):
        config = LandscapeConfig(grid=int(grid), max_images=int(max_images))
        job = start_landscape(ctx, [run_a or "", run_b or ""], config, user_of(request))
        return job.id, *view(job.id, log_scale, request)

    @user_errors
    def on_stop(job_id: str | None, request: gr.Request):
        if job_id:
            registry.stop(ctx.job(job_id, user_of(request)).id)

    view_outputs = [ui.status, ui.plot, ui.timer]
    ui.tab.select(refresh, [ui.run_a, ui.run_b], [ui.run_a, ui.run_b, ui.job], api_visibility="private") \
        .then(view, [ui.job, ui.log_scale], view_outputs, api_visibility="private")
    ui.start.click(on_start, [ui.run_a, ui.run_b, ui.grid, ui.max_images, ui.log_scale], [ui.job, *view_outputs],
                   api_visibility="private")
    ui.stop.click(on_stop, ui.job, None, api_visibility="private")
    ui.timer.tick(view, [ui.job, ui.log_scale], view_outputs, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")
    ui.log_scale.input(view, [ui.job, ui.log_scale], view_outputs, api_visibility="private")

    def start_landscape_api(run_a: str, run_b: str = "", grid: int = 11, max_images: int = 32,
                            request: gr.Request = None) -> dict:
        """Start computing the loss landscape of one or two runs; poll /job_status (result = panels)."""
        job = start_landscape(ctx, [run_a, run_b], LandscapeConfig(grid=grid, max_images=max_images),
                              user_of(request))
        return {"job_id": job.id}

    gr.api(user_errors(start_landscape_api), api_name="start_landscape", concurrency_limit=None)

"""Train tab: configure CoMet, start a run in the background, watch it live, stop it cleanly.

Training runs in a ``JobRegistry`` thread; the page polls the job with a ``gr.Timer`` (API clients poll the
``job_status`` endpoint instead), so a page refresh or a second browser tab never loses or disturbs a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from ...core.config import (BACKBONES, TEST_VIEWS, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig,
                            parse_views)
from ...core.detectors.memory import MemoryConfig
from ...core.detectors.registry import DEFAULT_DETECTOR, REGISTRY
from ...core.quality import DEFAULT_QUALITY, QUALITY
from ...core.training.presets import comet_parts
from ...viz.training import training_curves
from ..components import TrainUI
from ..context import AppContext, user_of
from ..jobs import Job
from ..media import thumbnail
from ..runs import STRATEGY_LABELS
from ..training import start_training
from ..widgets import refreshed_runs, run_dropdown, tab_page, user_errors

__all__ = ["TrainUI", "TrainRequest", "status_markdown", "create_ui", "bind_events"]

PARTS = {"soft weights (SCL)": "soft_weights", "refine (hard rejection)": "refine",
         "meta-learning (Reptile)": "meta", "adaptive L2": "adaptive_l2"}
_PART_LABELS = {part: label for label, part in PARTS.items()}
# Each choice of the Strategy radio ticks the CoMet parts its strategy (core/training/presets.py) turns on.
PRESETS = {label: [_PART_LABELS[part] for part in comet_parts(strategy)] for label, strategy in STRATEGY_LABELS.items()}
IMAGE_SIZES = [64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512]
N_LOWEST = 16
# The form's and the API's defaults are the core's: read, never retyped.
_BACKBONE, _TRAIN, _MEMORY = BackboneConfig(), TrainConfig(), MemoryConfig()


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """The Train form (or an API call) as plain values; ``configs()`` turns it into core configs."""

    folder: str
    detector: str = DEFAULT_DETECTOR
    backbone: str = _BACKBONE.name
    image_size: int = _BACKBONE.image_size
    rounds: int = _TRAIN.rounds
    steps_per_round: int = _TRAIN.steps_per_round
    memories: int = _MEMORY.n_memories  # sparse memories of the memory ensemble (MemoryConfig.n_memories)
    iqr_k: float = _TRAIN.comet.iqr_k
    soft_weights: bool = _TRAIN.comet.soft_weights
    refine: bool = _TRAIN.comet.refine
    meta: bool = _TRAIN.comet.meta
    adaptive_l2: bool = _TRAIN.comet.adaptive_l2
    device: str = _TRAIN.device
    seed: int = _TRAIN.seed
    overrides_from: str = ""
    tta: tuple[str, ...] = ()  # test-time views (ModelConfig.tta)
    augment: tuple[str, ...] = ()  # training views (ModelConfig.augment)

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        model = ModelConfig(detector=self.detector,
                            backbone=BackboneConfig(name=self.backbone, image_size=int(self.image_size)),
                            memory=MemoryConfig(n_memories=int(self.memories)), tta=self.tta, augment=self.augment)
        comet = CoMetConfig(soft_weights=self.soft_weights, refine=self.refine, meta=self.meta,
                            adaptive_l2=self.adaptive_l2, iqr_k=float(self.iqr_k))
        train = TrainConfig(rounds=int(self.rounds), steps_per_round=int(self.steps_per_round), comet=comet,
                            device=self.device, seed=int(self.seed))
        return model, train


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def status_markdown(snapshot: dict[str, Any]) -> str:
    """One paragraph: state, stage progress with ETA, last round's numbers, and what to do next."""
    info, history = snapshot["info"], snapshot["history"]
    state = {"running": "Running", "done": "Finished", "stopped": "Stopped", "failed": "Failed"}[snapshot["status"]]
    lines = [f"**{state}** · job `{snapshot['job_id']}` · run `{snapshot['run_id']}` · "
             f"{_duration(snapshot['elapsed_seconds'])} elapsed"]
    if "n_images" in info:
        extra = f", {info['overrides']} overrides applied" if info.get("overrides") else ""
        dropped = f" ({info['overrides_dropped']} dropped: not in this folder)" if info.get("overrides_dropped") else ""
        lines.append(f"{info['n_images']} images, {info['n_skipped']} skipped{extra}{dropped}")
    if snapshot["status"] == "running":
        stage = snapshot["stage"]
        if stage == "rounds":
            stage = "training round"
        progress = f"{snapshot['done']}/{snapshot['total']}" if snapshot["total"] else ""
        lines.append(f"{stage} {progress} · ETA {_duration(snapshot['eta_seconds'])} for this stage")
    if history:
        last = history[-1]
        weights = (f"IQR threshold {last['threshold']:.4g}, mean weight {last['mean_weight']:.3f}, "
                   f"best round {last['best_round'] + 1}")
        loss = last.get("train_loss")  # NaN, or None after JSON, for a training-free memory
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            lines.append(f"round {last['round'] + 1}: train loss {last['train_loss']:.4g}, val loss "
                         f"{last['val_loss']:.4g}, lambda {last['lambda']:.3g}, {weights}")
        else:  # a training-free memory: a round is a memory pass, there is no loss
            lines.append(f"memory pass {last['round'] + 1}: {weights}")
    if snapshot["status"] == "failed":
        lines.append(f"**Error:** {snapshot['error']}")
    elif snapshot["status"] == "stopped":
        lines.append("The best model so far is saved: see **Inspect**." if snapshot["run_id"] and history
                     else "Stopped before the first round: nothing was saved.")
    elif snapshot["status"] == "done":
        lines.append("Done: see **Inspect** for every image's weight.")
    return "  \n".join(lines)


def _lowest_weights(ctx: AppContext, job: Job) -> list[tuple[str, str]]:
    event, paths = job.latest_event(), job.info.get("_paths")
    if event is None or not paths:
        return []
    order = event.weights.argsort(kind="stable")[:N_LOWEST]
    return [(thumbnail(paths[i], ctx.cache_dir), f"w {event.weights[i]:.2f} · {Path(paths[i]).name}")
            for i in order]


def create_ui(ctx: AppContext) -> TrainUI:
    gpu = torch.cuda.is_available()
    with tab_page("2 · Train", "train") as tab:
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                preset = gr.Radio(list(PRESETS), value="CoMet", label="Strategy")
                parts = gr.CheckboxGroup(list(PARTS), value=PRESETS["CoMet"], label="CoMet parts")
                detector = gr.Dropdown(list(REGISTRY), value=DEFAULT_DETECTOR, label="Detector head")
                default = QUALITY[DEFAULT_QUALITY]
                quality = gr.Radio(list(QUALITY), value=DEFAULT_QUALITY,
                                   label="Quality (sets backbone, size, memories, rounds)",
                                   info="; ".join(f"{name}: {q.summary}" for name, q in QUALITY.items()),
                                   elem_id="train-quality")
                backbone = gr.Dropdown(list(BACKBONES), value=default.backbone, label="Backbone")
                image_size = gr.Dropdown(IMAGE_SIZES, value=default.image_size, label="Image size (px)",
                                         elem_id="train-image-size")
                memories = gr.Slider(1, 32, value=default.memories, step=1, label="Memories (memory detector)",
                                     info="sparse random memories: more = steadier scores, slower fit and inference",
                                     elem_id="train-memories")
                rounds = gr.Slider(1, 50, value=default.rounds, step=1, label="Rounds", elem_id="train-rounds")
                steps = gr.Slider(1, 200, value=_TRAIN.steps_per_round, step=1, label="Steps per round",
                                  elem_id="train-steps")
                iqr_k = gr.Slider(0.0, 5.0, value=_TRAIN.comet.iqr_k, step=0.1,
                                  label="IQR k (threshold T = Q3 + k * IQR)")
                with gr.Accordion("Views (parts in any orientation or light)", open=False):
                    tta = gr.CheckboxGroup(list(TEST_VIEWS), value=[], label="Test-time views",
                                           info="each image is also scored through these; one backbone pass each",
                                           elem_id="train-tta")
                    augment = gr.CheckboxGroup(list(TEST_VIEWS), value=[], label="Training views",
                                               info="each training image is also learnt through these",
                                               elem_id="train-augment")
                device = gr.Radio(["auto", "cpu"] + (["cuda"] if gpu else []), value=_TRAIN.device,
                                  label=f"Device ({'GPU found' if gpu else 'no GPU found: CPU'})")
                overrides_from = run_dropdown(ctx, "Apply the overrides of run", "train-overrides-from",
                                              optional=True)
                with gr.Row():
                    start = gr.Button("Start training", variant="primary", elem_id="train-start")
                    stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
            with gr.Column(scale=3):
                folder_note = gr.Markdown(_folder_note(ctx.default_folder))
                job = gr.Dropdown(label="Training job", choices=[], allow_custom_value=True, elem_id="train-job")
                status = gr.Markdown("No training yet: press **Start training**.", elem_id="train-status")
                curves = gr.Plot(show_label=False, elem_id="train-curves")
                weights = gr.Gallery(label=f"Lowest confidence weights (the {N_LOWEST} least trusted images)",
                                     columns=8, height=280, object_fit="cover", elem_id="train-weights")
        timer = gr.Timer(1.0, active=False)
        seen = gr.State(None)
    ctx.train = TrainUI(tab, preset, parts, detector, quality, backbone, image_size, rounds, steps, iqr_k, device,
                        overrides_from, start, stop, folder_note, job, status, curves, weights, timer, seen,
                        tta, augment, memories)
    return ctx.train


def _quality_values(name: str) -> tuple[str, int, int, int]:
    preset = QUALITY[name]
    return preset.backbone, preset.image_size, preset.memories, preset.rounds


def _folder_note(folder: str) -> str:
    return f"Training images: `{folder}` (change it on the **Data** tab)" if folder else \
        "Choose a folder of images on the **Data** tab first."


def _job_choices(ctx: AppContext, user: str | None) -> list[tuple[str, str]]:
    return [(j.label, j.id) for j in ctx.jobs("train", user)]


def bind_events(ctx: AppContext) -> None:
    ui = ctx.train
    registry = ctx.registry

    def _find(job_id: str | None, user: str | None) -> Job | None:
        # An id from before an app restart falls back to the latest job rather than failing every tick.
        try:
            return ctx.job(job_id, user) if job_id else ctx.latest_job("train", user)
        except KeyError:
            return ctx.latest_job("train", user)

    def view(job_id: str | None, seen, request: gr.Request):
        """(status, curves, gallery, seen, timer) for the chosen job, skipping unchanged snapshots."""
        job = _find(job_id, user_of(request))
        if job is None:
            return gr.skip(), gr.skip(), gr.skip(), None, gr.Timer(active=False)
        snapshot = job.snapshot()
        key = [job.id, snapshot["version"]]
        if seen == key:
            return gr.skip(), gr.skip(), gr.skip(), seen, gr.Timer(active=job.active)
        event = job.latest_event()
        figure = training_curves(snapshot["history"], rounds=job.info.get("rounds"),
                                 best_round=event.best_round if event else None)
        return (status_markdown(snapshot), figure, _lowest_weights(ctx, job), key,
                gr.Timer(active=job.active))

    @user_errors
    def on_start(folder, detector, backbone, image_size, rounds, steps, iqr_k, parts, device, overrides_from,
                 tta, augment, memories, http: gr.Request):
        chosen = {PARTS[p] for p in parts or []}
        request = TrainRequest(folder=folder, detector=detector, backbone=backbone, image_size=int(image_size),
                               rounds=int(rounds), steps_per_round=int(steps), memories=int(memories),
                               iqr_k=float(iqr_k),
                               device=device, overrides_from=overrides_from or "", tta=tuple(tta or ()),
                               augment=tuple(augment or ()), **{key: key in chosen for key in PARTS.values()})
        model_config, train_config = request.configs()
        user = user_of(http)
        job = start_training(ctx, request.folder, model_config, train_config,
                             overrides_from=request.overrides_from, user=user)
        return (gr.Dropdown(choices=_job_choices(ctx, user), value=job.id), *view(job.id, None, http))

    @user_errors
    def on_stop(job_id: str | None, request: gr.Request):
        job = _find(job_id, user_of(request))
        if job is None or not job.active:
            raise gr.Error("no training is running")
        registry.stop(job.id)
        gr.Info("Stopping after the current step; the best model so far will be kept.")

    def on_load(current_overrides: str | None, request: gr.Request):
        user = user_of(request)
        latest = ctx.latest_job("train", user)
        return (gr.Dropdown(choices=_job_choices(ctx, user), value=latest.id if latest else None),
                refreshed_runs(ctx, current_overrides, optional=True, request=request))

    view_outputs = [ui.status, ui.curves, ui.weights, ui.seen, ui.timer]
    ui.preset.input(lambda name: PRESETS[name], ui.preset, ui.parts, api_visibility="private")
    ui.quality.input(_quality_values, ui.quality, [ui.backbone, ui.image_size, ui.memories, ui.rounds],
                     api_visibility="private")
    ui.start.click(on_start, [ctx.data.folder, ui.detector, ui.backbone, ui.image_size, ui.rounds, ui.steps,
                              ui.iqr_k, ui.parts, ui.device, ui.overrides_from, ui.tta, ui.augment, ui.memories],
                   [ui.job, *view_outputs],
                   api_visibility="private")
    ui.stop.click(on_stop, ui.job, None, api_visibility="private")
    ctx.data.folder.change(_folder_note, ctx.data.folder, ui.folder_note, api_visibility="private")
    ui.timer.tick(view, [ui.job, ui.seen], view_outputs, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")
    def on_pick(job_id: str | None, request: gr.Request):
        return view(job_id, None, request)

    ui.job.input(on_pick, ui.job, view_outputs, api_visibility="private")
    ctx.blocks.load(on_load, ui.overrides_from, [ui.job, ui.overrides_from], api_visibility="private") \
        .then(view, [ui.job, ui.seen], view_outputs, api_visibility="private")
    ui.tab.select(on_load, ui.overrides_from, [ui.job, ui.overrides_from], api_visibility="private")
    _register_api(ctx)


def _register_api(ctx: AppContext) -> None:
    d = TrainRequest(folder="")  # the defaults, once

    def start_training_api(folder: str, detector: str = d.detector, backbone: str = d.backbone,
                           image_size: int = d.image_size, rounds: int = d.rounds,
                           steps_per_round: int = d.steps_per_round, memories: int = d.memories,
                           iqr_k: float = d.iqr_k,
                           soft_weights: bool = d.soft_weights, refine: bool = d.refine, meta: bool = d.meta,
                           adaptive_l2: bool = d.adaptive_l2, device: str = d.device, seed: int = d.seed,
                           overrides_from: str = "", tta: str = "", augment: str = "",
                           http: gr.Request = None) -> dict:
        """Start training on a folder under a data root; returns {job_id, run_id}. Poll /job_status.
        ``tta``/``augment``: comma-separated test-time and training views, e.g. "hflip,rot90"."""
        request = TrainRequest(folder=folder, detector=detector, backbone=backbone, image_size=image_size,
                               rounds=rounds, steps_per_round=steps_per_round, memories=memories, iqr_k=iqr_k,
                               soft_weights=soft_weights, refine=refine, meta=meta, adaptive_l2=adaptive_l2,
                               device=device, seed=seed, overrides_from=overrides_from,
                               tta=parse_views(tta, "tta"), augment=parse_views(augment, "augment"))
        model_config, train_config = request.configs()
        job = start_training(ctx, folder, model_config, train_config, overrides_from=overrides_from,
                             user=user_of(http))
        return {"job_id": job.id, "run_id": job.run_dir.name}

    def job_status(job_id: str = "", request: gr.Request = None) -> dict:
        """State of a job (training or landscape): status, stage, progress, ETA, per-round history, error.
        An empty id means the latest training job."""
        user = user_of(request)
        job = ctx.job(job_id, user) if job_id else ctx.latest_job("train", user)
        if job is None:
            raise gr.Error("no training job in this app session yet")
        snapshot = job.snapshot()
        snapshot["result"] = job.result if isinstance(job.result, (dict, list)) else None
        return snapshot

    def stop_job(job_id: str, request: gr.Request = None) -> dict:
        """Ask a job to stop at its next step (training keeps its best model so far)."""
        return ctx.registry.stop(ctx.job(job_id, user_of(request)).id).snapshot()

    for fn, name in ((start_training_api, "start_training"), (job_status, "job_status"), (stop_job, "stop_job")):
        gr.api(user_errors(fn), api_name=name, concurrency_limit=None)

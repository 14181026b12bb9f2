"""The components each tab builds (``create_ui``), one dataclass per tab: ``AppContext`` holds one of each, so
``bind_events`` of any tab can wire any tab's components (the Train tab reads the Data tab's folder)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

__all__ = ["DataUI", "TrainUI", "InspectUI", "LandscapeUI", "TestUI", "ExportUI"]


@dataclass
class DataUI:
    tab: gr.Tab
    folder: gr.Textbox
    scan: gr.Button
    stop: gr.Button
    roots: gr.Markdown
    upload: gr.File
    upload_dir: gr.File
    summary: gr.Markdown
    skipped: gr.Dataframe
    gallery: gr.Gallery


@dataclass
class TrainUI:
    tab: gr.Tab
    preset: gr.Radio
    parts: gr.CheckboxGroup
    detector: gr.Dropdown
    quality: gr.Radio
    backbone: gr.Dropdown
    image_size: gr.Dropdown
    rounds: gr.Slider
    steps: gr.Slider
    iqr_k: gr.Slider
    device: gr.Radio
    overrides_from: gr.Dropdown
    start: gr.Button
    stop: gr.Button
    folder_note: gr.Markdown
    job: gr.Dropdown
    status: gr.Markdown
    curves: gr.Plot
    weights: gr.Gallery
    timer: gr.Timer
    seen: gr.State
    tta: gr.CheckboxGroup
    augment: gr.CheckboxGroup
    memories: gr.Slider


@dataclass
class InspectUI:
    tab: gr.Tab
    run: gr.Dropdown
    order: gr.Radio
    show: gr.Radio
    summary: gr.Markdown
    plot: gr.Plot
    gallery: gr.Gallery
    shown: gr.State
    selected: gr.State
    slider: gr.ImageSlider
    detail: gr.Markdown
    override: gr.Radio
    retrain: gr.Button
    message: gr.Markdown


@dataclass
class LandscapeUI:
    tab: gr.Tab
    run_a: gr.Dropdown
    run_b: gr.Dropdown
    grid: gr.Slider
    max_images: gr.Slider
    log_scale: gr.Checkbox
    start: gr.Button
    stop: gr.Button
    status: gr.Markdown
    plot: gr.Plot
    timer: gr.Timer
    job: gr.State


@dataclass
class TestUI:
    tab: gr.Tab
    run: gr.Dropdown
    files: gr.File
    folder: gr.Textbox
    threshold: gr.Slider
    score: gr.Button
    slider: gr.ImageSlider
    gallery: gr.Gallery
    summary: gr.Markdown
    table: gr.Dataframe
    roc: gr.Plot
    results: gr.State


@dataclass
class ExportUI:
    tab: gr.Tab
    run: gr.Dropdown
    build: gr.Button
    file: gr.File
    summary: gr.Markdown

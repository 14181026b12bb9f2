"""What every tab receives: the runs folder, the job registry, and the other tabs' components."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from .jobs import JobRegistry
from .runs import run_choices

if TYPE_CHECKING:  # the tab modules import this one
    from .tabs.data import DataUI
    from .tabs.export import ExportUI
    from .tabs.inspect import InspectUI
    from .tabs.landscape import LandscapeUI
    from .tabs.test import TestUI
    from .tabs.train import TrainUI

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """Built once per app. ``create_ui`` of each tab fills its slot; ``bind_events`` may use any slot, so
    every component exists before any event is wired (no import cycles between tabs)."""

    runs_dir: Path
    registry: JobRegistry
    default_folder: str = ""
    blocks: gr.Blocks | None = None
    data: DataUI | None = None
    train: TrainUI | None = None
    inspect: InspectUI | None = None
    landscape: LandscapeUI | None = None
    test: TestUI | None = None
    export: ExportUI | None = None

    @property
    def cache_dir(self) -> Path:
        """Thumbnails, heatmaps, exports and the demo folder: served, never committed, safe to delete."""
        return self.runs_dir / ".cache"

    @property
    def uploads_dir(self) -> Path:
        return self.runs_dir / ".uploads"

    def run_choices(self) -> list[tuple[str, str]]:
        return run_choices(self.runs_dir)

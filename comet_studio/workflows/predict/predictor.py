"""Loading a predictor and streaming predictions over many images in chunks (the app's Test tab), so a
large folder never sits in memory. Files on disk (CSV/Parquet tables, heatmaps) come from
``batch_predict``, the one writer the CLI and Ray share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ...core.data.folder import display_path, name_problem, scan_folder
from ...core.data.images import ImageReadError, is_image_name, read_image
from ...core.model import AnomalyModel, Prediction

__all__ = ["Predictor", "load_predictor", "collect_images", "iter_predictions"]


class Predictor(Protocol):
    """Anything that scores RGB images: ``AnomalyModel`` or ``OnnxPredictor``."""

    def predict(self, images: Sequence[np.ndarray]) -> Prediction: ...


def load_predictor(source: str | Path, *, device: str = "auto") -> Predictor:
    """An exported ``.onnx`` file -> ``OnnxPredictor``; a run folder, its ``model/`` folder or an exported
    ``.safetensors`` file -> ``AnomalyModel``."""
    if Path(source).suffix.lower() == ".onnx":
        from ...core.io.onnx_predictor import OnnxPredictor  # onnxruntime is only imported when needed

        return OnnxPredictor(source, device=device)
    return AnomalyModel.load(source, device=device)


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image paths from files and folders (folders recursively); returns (paths, skipped (path, reason))."""
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            folder = scan_folder(item, verify=False, min_images=0)
            paths.extend(folder.paths)
            skipped.extend((s.path, s.reason) for s in folder.skipped)
        elif item.is_file() and is_image_name(item):
            problem = name_problem(item)
            if problem is None:
                paths.append(str(item))
            else:
                skipped.append((display_path(item), problem))
        elif item.exists():
            skipped.append((str(item), f"not an image file extension ({item.suffix or 'none'})"))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return paths, skipped


def iter_predictions(model: Predictor, paths: Sequence[str], *, chunk: int = 64
                     ) -> Iterator[tuple[list[str], Prediction | None, list[tuple[str, str]], list]]:
    """(paths, prediction, unreadable, images) per chunk. Unreadable files are reported, not raised."""
    for start in range(0, len(paths), chunk):
        good, bad = [], []
        images = []
        for p in paths[start:start + chunk]:
            try:
                images.append(read_image(p))
                good.append(p)
            except ImageReadError as error:
                bad.append((p, str(error)))
        if good:
            yield good, model.predict(images), bad, images
        elif bad:
            yield [], None, bad, []

"""Batch prediction over many images: streamed in chunks, so a large folder never sits in memory."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .data.folder import display_path, name_problem, scan_folder
from .data.images import ImageReadError, is_image_name, read_image
from .model import AnomalyModel, Prediction
from .visualize import overlay_heatmap

__all__ = ["Predictor", "load_predictor", "collect_images", "iter_predictions", "predict_to_csv"]

_SURROGATES = re.compile("[\ud800-\udfff]")  # how Python holds the bytes of a non-UTF-8 file name


class Predictor(Protocol):
    """Anything that scores RGB images: ``AnomalyModel`` or ``OnnxPredictor``."""

    def predict(self, images: Sequence[np.ndarray]) -> Prediction: ...


def load_predictor(source: str | Path, *, device: str = "auto") -> Predictor:
    """An exported ``.onnx`` file -> ``OnnxPredictor``; a run folder, its ``model/`` folder or an exported
    ``.safetensors`` file -> ``AnomalyModel``."""
    if Path(source).suffix.lower() == ".onnx":
        from .onnx_predictor import OnnxPredictor  # onnxruntime is only imported when needed

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


def predict_to_csv(model: Predictor, paths: Sequence[str], out_dir: str | Path, *, heatmaps: bool = True,
                   chunk: int = 64, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``predictions.csv`` (path, score, raw_score, label, error) and optional overlays into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heat_dir = out / "heatmaps"
    if heatmaps:
        heat_dir.mkdir(exist_ok=True)
    csv_path = out / "predictions.csv"
    done = 0
    with open(csv_path, "w", newline="", errors="surrogateescape") as handle:  # a name's raw bytes, as on disk
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "raw_score", "label", "error"])
        for good, prediction, bad, images in iter_predictions(model, paths, chunk=chunk):
            for i, p in enumerate(good):
                label = "anomalous" if prediction.labels[i] else "good"
                writer.writerow([p, f"{prediction.scores[i]:.6f}", f"{prediction.raw_scores[i]:.6g}", label, ""])
                if heatmaps:
                    overlay = overlay_heatmap(images[i], prediction.maps[i])
                    # OpenCV crashes (segfault) on a str holding undecodable bytes (surrogates): drop them.
                    stem = _SURROGATES.sub("_", Path(p).stem)
                    name = f"{done + i:06d}_{stem}.png"
                    cv2.imwrite(str(heat_dir / name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            for p, reason in bad:
                writer.writerow([p, "", "", "", reason])
            done += len(good) + len(bad)
            if progress is not None:
                progress(done, len(paths))
    return csv_path

"""``comet-studio predict``: score every listed image with a model, on an engine, into one table.

``predict_images`` checks its arguments and loads the model once (a bad model fails before any work), then
runs the pipeline (``pipeline.py``) in this process (``engine="local"``) or hands its stages to Ray Data
(``engine="ray"``, ``ray_predict.py``). Both write the same files (see ``pipeline.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...core.progress import CountProgress
from ...engines.engine import ENGINES, make_engine, require_ray
from .pipeline import PredictSummary, TableFormat, input_size, load_predictor, predict_local

__all__ = ["predict_images"]


def predict_images(source: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *,
                   engine: str = "local", address: str | None = None, device: str = "auto",
                   heatmaps: bool = False, fmt: TableFormat = "csv", batch_size: int = 32,
                   workers: int | None = None, progress: CountProgress | None = None) -> PredictSummary:
    """Score every image of ``inputs`` (image files, folders, text files of paths) with the model at
    ``source`` (a run folder, its ``model/`` folder, an exported ``.safetensors`` or ``.onnx`` file).

    ``engine="local"`` runs here; ``engine="ray"`` streams the listing through Ray Data on the cluster at
    ``address`` (default: a local one) with ``workers`` predictor actors, each loading the model once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if engine == "local" and (address is not None or workers is not None):
        raise ValueError("--address and --workers apply to --engine ray")
    if engine == "ray":
        require_ray()  # before the model load and the cluster start
    predictor = load_predictor(source, device=device)  # fails here, before any work, for a bad model
    if engine == "local":
        return predict_local(predictor, inputs, out_dir, heatmaps=heatmaps, fmt=fmt, batch_size=batch_size,
                             progress=progress)
    size = input_size(predictor)
    del predictor  # each actor loads its own copy
    with make_engine(engine, address=address):  # joins --address, or starts a local cluster and stops it after
        from .ray_predict import predict_ray

        return predict_ray(source, size, inputs, out_dir, device=device, heatmaps=heatmaps, fmt=fmt,
                           batch_size=batch_size, workers=workers, progress=progress)

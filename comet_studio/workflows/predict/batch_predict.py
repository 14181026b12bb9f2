"""Streaming prediction over many images, the same on every engine: listing -> decode -> score -> heatmaps
-> one table.

Each stage is a function of a column batch (a dict of numpy arrays: ``index``, ``path``, ``error``, then
``image``, then ``score``/``raw_score``/``label``/``map``, then ``heatmap``). ``predict_images`` runs the
stages in this process (``engine="local"``) or hands them to Ray Data (``engine="ray"``,
``ray_predict.py``); the stages themselves live in ``stages.py``. Both write the same files::

    predictions.csv | predictions.parquet   path, score, raw_score, label, heatmap, error (listing order)
    heatmaps/<index:06d>_<stem>.png          overlays at the original resolution (with ``heatmaps=True``)

A file that cannot be read gets a row with its ``error``; it never stops the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .predictor import Predictor, load_predictor
from ...core.progress import CountProgress
from ...engines.engine import ENGINES, make_engine, require_ray
from .listing import iter_blocks, iter_listing, to_columns
from .stages import (TABLE_COLUMNS, PredictSummary, TableFormat, TableWriter, decode_batch, input_size,
                     prepare_out, score_batch, write_heatmaps)

__all__ = ["TableFormat", "TABLE_COLUMNS", "PredictSummary", "input_size", "decode_batch", "score_batch",
           "write_heatmaps", "TableWriter", "predict_images", "predict_local"]


def _decoded_blocks(inputs: Sequence[str | Path], batch_size: int, size: int, base: str
                    ) -> Iterator[dict[str, np.ndarray]]:
    """Decoded blocks in order; the next block decodes in a background thread while the caller scores this
    one (decoding and resizing release the GIL), as Ray's decode tasks run beside its actors."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = None
        for block in iter_blocks(iter_listing(inputs), batch_size):
            future = pool.submit(decode_batch, to_columns(block), size=size, base=base)
            if ahead is not None:
                yield ahead.result()
            ahead = future
        if ahead is not None:
            yield ahead.result()


def predict_local(predictor: Predictor, inputs: Sequence[str | Path], out_dir: str | Path, *,
                  heatmaps: bool = False, fmt: TableFormat = "csv", batch_size: int = 32,
                  progress: CountProgress | None = None) -> PredictSummary:
    """Run the stages in this process, one batch at a time."""
    out, heat_dir = prepare_out(out_dir, heatmaps)
    size, base = input_size(predictor), os.getcwd()
    writer = TableWriter(out, fmt)
    done = 0
    try:
        for decoded in _decoded_blocks(inputs, batch_size, size, base):
            batch = score_batch(predictor, decoded, maps=heatmaps)
            if heat_dir is not None:
                batch = write_heatmaps(batch, heat_dir=str(heat_dir), base=base)
            done += writer.write(batch)
            if progress is not None:
                progress(done)
    except BaseException:
        writer.abort()
        raise
    return PredictSummary(writer.close(), writer.scored, writer.failed, heat_dir)


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

"""Prediction on a Ray cluster with Ray Data: the stages of ``pipeline.py`` as a streaming pipeline.

    spool blocks (from_items of small block records)
      -> read + decode (tasks, in parallel)          -> images resized to the model's input
      -> score (a fixed pool of predictor actors)    -> each actor loads the model once (GPU when there)
      -> heatmaps (tasks, only when asked)            -> PNG overlays written by the workers
      -> the driver writes one table, in listing order, as batches arrive

The driver holds one record per block of paths, never the paths. Inputs, the model and the output folder
must be visible at the same path on every node (shared storage); on a local cluster they are.
Imported only by ``predict_images(engine="ray")`` after the cluster is connected.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import ray

from ...core.progress import CountProgress
from .listing import SpoolBlock, read_spool_block, spool_listing, to_columns
from .pipeline import (PredictSummary, TableFormat, TableWriter, decode_batch, load_predictor, prepare_out,
                       score_batch, write_heatmaps, write_rows)

__all__ = ["predict_ray", "default_workers"]

logger = logging.getLogger(__name__)


class _Scorer:
    """A Ray Data actor: loads the predictor once, then scores batch after batch."""

    def __init__(self, source: str, device: str, threads: int, maps: bool) -> None:
        import torch

        torch.set_num_threads(threads)
        self.predictor = load_predictor(source, device=device)
        self.maps = maps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return score_batch(self.predictor, batch, maps=self.maps)


def _load_block(record: dict[str, np.ndarray], *, spool: str, size: int, base: str) -> dict[str, np.ndarray]:
    """One spool block: its entries, read and decoded (one task per block, so blocks decode in parallel)."""
    entries = []
    for start, offset, count in zip(record["start"], record["offset"], record["count"]):
        entries.extend(read_spool_block(spool, SpoolBlock(int(start), int(offset), int(count))))
    return decode_batch(to_columns(entries), size=size, base=base)


def default_workers() -> int:
    """Predictor actors to start: one per GPU when the cluster has GPUs, else one per CPU (each with one
    torch thread: independent processes scale better on CPUs than one process's intra-op threads)."""
    resources = ray.cluster_resources()
    return int(resources.get("GPU", 0)) or max(1, int(resources.get("CPU", 1)))


def predict_ray(source: str | Path, size: int, inputs: Sequence[str | Path], out_dir: str | Path, *,
                device: str = "auto", heatmaps: bool = False, fmt: TableFormat = "csv", batch_size: int = 32,
                workers: int | None = None, progress: CountProgress | None = None) -> PredictSummary:
    """Score ``inputs`` with ``workers`` actors (default ``default_workers()``) and write the same table and
    heatmaps as ``predict_local``. ``size`` is the model's input size (the driver loaded the model once)."""
    out, heat_dir = prepare_out(out_dir, heatmaps)
    resources = ray.cluster_resources()
    gpu, cpus = resources.get("GPU", 0) > 0, int(resources.get("CPU", 1))
    workers = workers or default_workers()
    if workers < 1 or (not gpu and workers > cpus):
        raise ValueError(f"workers must be between 1 and the cluster's {cpus} CPUs, got {workers}")
    threads = 1 if gpu else max(1, cpus // workers)
    base = os.getcwd()
    with TableWriter(out, fmt) as writer:
        # The spool sits in the output folder: on a multi-node cluster that is the shared storage workers read.
        handle, spool = tempfile.mkstemp(prefix=".listing-", suffix=".spool", dir=out)
        os.close(handle)
        try:
            blocks = spool_listing(inputs, Path(spool), batch_size)
            if blocks:
                batches = _stream(blocks, spool, source=source, device=device, size=size, base=base, gpu=gpu,
                                  cpus=cpus, workers=workers, threads=threads, heat_dir=heat_dir)
                write_rows(writer, batches, progress)
        finally:
            os.unlink(spool)
    return writer.summary(heat_dir)


def _stream(blocks: list[SpoolBlock], spool: str, *, source: str | Path, device: str, size: int, base: str,
            gpu: bool, cpus: int, workers: int, threads: int, heat_dir: Path | None):
    """The finished batches, in listing order, from a Ray Data pipeline over the spool's blocks."""
    # One Ray Data block per spool block, kept whole through every stage (batch_size=None): each task
    # and actor call then hands on its result at once. Bundling many small records into one task would
    # decode serially and hold every row back until a 128 MB output block filled.
    ds = ray.data.from_items([asdict(b) for b in blocks], override_num_blocks=len(blocks))
    ds.context.execution_options.preserve_order = True  # the table comes out in listing order
    ds.context.enable_progress_bars = False  # the caller reports progress from the rows it writes
    # The actors reserve the CPUs (or GPUs). Reading, decoding and heatmap writing reserve none, and a
    # bounded number of tasks run beside them: with whole CPUs of their own they could wait forever for
    # the actors to free one (on a 2-CPU machine two actors hold both). On GPU nodes the CPUs the
    # actors leave free all decode: one GPU scores faster than one core decodes.
    decoders = max(2, cpus - workers) if gpu else max(2, workers)
    light = {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=decoders), "batch_size": None}
    ds = ds.map_batches(_load_block, fn_kwargs={"spool": spool, "size": size, "base": base}, **light)
    scorer = {"source": str(Path(source).resolve()), "device": device, "threads": threads,
              "maps": heat_dir is not None}
    ds = ds.map_batches(_Scorer, fn_constructor_kwargs=scorer, batch_size=None,
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        num_gpus=1 if gpu else 0, num_cpus=1 if gpu else threads)
    if heat_dir is not None:
        ds = ds.map_batches(write_heatmaps, fn_kwargs={"heat_dir": str(heat_dir.resolve()), "base": base},
                            **light)
    return ds.iter_batches(batch_size=None, batch_format="numpy")

"""Extract patch features once for a set of images, batched, on the GPU when there.

GPU out-of-memory halves the batch, and at batch 1 falls back to the CPU, with a logged message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..data.transforms import load_resized, to_tensor
from ..data.views import apply_view
from .extractor import FeatureExtractor

__all__ = ["extract_features", "resolve_device", "StopRequested"]

logger = logging.getLogger(__name__)
ImageItem = str | Path | np.ndarray


class StopRequested(Exception):
    """Raised between batches when the caller's stop event is set."""


def resolve_device(device: str) -> torch.device:
    """``auto`` means CUDA when available, else CPU; asking for CUDA without one is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


def _run(extractor: FeatureExtractor, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    with torch.inference_mode():
        return extractor(batch.to(device, non_blocking=True)).float().cpu()


def extract_features(
    extractor: FeatureExtractor,
    items: Sequence[ImageItem],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    fp16: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    view: str | None = None,
) -> torch.Tensor:
    """Features (N, D, h, w) on the CPU for image paths or RGB arrays, in order.

    On a GPU, decoding runs in a small thread pool ahead of the network. ``progress(done, total)`` is called after
    each batch. ``fp16`` stores the result in half precision (half the memory). ``view``: the features of
    each image seen through this test-time view (data/views.py) instead.
    """
    device = torch.device(device) if isinstance(device, str) else device
    size = extractor.config.image_size
    extractor.to(device)
    n = len(items)
    h, w = extractor.grid
    out = torch.empty((n, extractor.out_dim, h, w), dtype=torch.float16 if fp16 else torch.float32)
    chunks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]

    def load(idx: list[int]) -> torch.Tensor:
        batch = to_tensor([load_resized(items[i], size) for i in idx])
        return batch if view is None else apply_view(batch, view)

    done = 0
    limit = batch_size  # shrinks for good after a GPU out-of-memory (see _run_with_fallback)
    for idx, batch in _decoded(load, chunks, ahead=device.type == "cuda"):
        if stop is not None and stop.is_set():
            raise StopRequested("stopped during feature extraction")
        feats, device, limit = _run_with_fallback(extractor, batch, device, limit)
        out[idx[0]: idx[-1] + 1] = feats.to(out.dtype)
        done += len(idx)
        if progress is not None:
            progress(done, n)
    return out


def _decoded(load: Callable[[list[int]], torch.Tensor], chunks: list[list[int]], *,
             ahead: bool) -> Iterator[tuple[list[int], torch.Tensor]]:
    """The decoded batches in order. ``ahead`` (a GPU runs the network): two batches are decoded in a thread
    pool while it works. On a CPU the pool's threads compete with torch's for the same cores (measured on 2
    cores: 22 img/s with the pool against 38-45 inline), so there each batch is decoded when it is needed."""
    if not ahead:
        for idx in chunks:
            yield idx, load(idx)
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(load, idx) for idx in chunks[:2]]
        for k, idx in enumerate(chunks):
            batch = futures[k].result()
            if k + 2 < len(chunks):
                futures.append(pool.submit(load, chunks[k + 2]))
            yield idx, batch


def _run_with_fallback(extractor: FeatureExtractor, batch: torch.Tensor, device: torch.device,
                       limit: int) -> tuple[torch.Tensor, torch.device, int]:
    """Run ``batch`` in slices of at most ``limit`` images; on GPU out-of-memory halve the slice until it
    fits, then fall back to the CPU. Returns the features, the device and the slice size that worked, which
    the caller passes back as ``limit`` so that later batches do not fail again at the sizes that did."""
    size = max(1, min(limit, len(batch)))
    while True:
        try:
            parts = [_run(extractor, batch[i:i + size], device) for i in range(0, len(batch), size)]
            return torch.cat(parts), device, size
        except torch.OutOfMemoryError:
            if device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if size == 1:
                break
            size //= 2
            logger.warning("GPU out of memory: retrying feature extraction with batch size %d", size)
    logger.warning("GPU out of memory at batch size 1: extracting features on the CPU instead")
    cpu = torch.device("cpu")
    extractor.to(cpu)
    return _run(extractor, batch, cpu), cpu, len(batch)

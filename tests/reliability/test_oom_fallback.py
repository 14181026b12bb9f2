"""GPU out-of-memory during feature extraction: the batch is halved until it fits, then the CPU takes over,
each step with a logged message, and the features are the ones the CPU computes. Run on a CPU-only machine by
standing in for the GPU: the low-level ``_run`` raises ``torch.OutOfMemoryError`` on the "cuda" device for
batches above a size (and computes on the CPU otherwise)."""

from __future__ import annotations

import logging

import pytest
import torch

from comet_studio.core.config import BackboneConfig
from comet_studio.core.features import cache
from comet_studio.core.model import _quiet_extractor
from tests.conftest import TINY, good_tiles

BATCH = 8
N_IMAGES = 12  # a full batch of 8, then a short one of 4


@pytest.fixture(scope="module")
def extractor():
    return _quiet_extractor(BackboneConfig(image_size=TINY))


@pytest.fixture(scope="module")
def cpu_features(extractor):
    return cache.extract_features(extractor, good_tiles(N_IMAGES), device="cpu", batch_size=BATCH)


def _fake_gpu(monkeypatch, extractor, fits: int) -> list[tuple[str, int]]:
    """'cuda' runs hold at most ``fits`` images (0: none); returns the log of (device, batch size) calls."""
    calls: list[tuple[str, int]] = []
    real_run = cache._run

    def run(model, batch, device):
        calls.append((device.type, len(batch)))
        if device.type == "cuda":
            if len(batch) > fits:
                raise torch.OutOfMemoryError(f"CUDA out of memory (stand-in): batch {len(batch)} > {fits}")
            device = torch.device("cpu")  # the stand-in GPU computes on the CPU
        return real_run(model, batch, device)

    monkeypatch.setattr(cache, "_run", run)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    # extract_features moves the extractor to the requested device; there is no CUDA here to move it to.
    real_to = extractor.to
    monkeypatch.setattr(extractor, "to", lambda device, *a, **k: extractor if torch.device(device).type == "cuda"
                        else real_to(device, *a, **k))
    return calls


def _extract_on_fake_gpu(monkeypatch, caplog, extractor, fits: int):
    """Extract N_IMAGES tiles on the stand-in GPU; returns (features, (device, batch size) calls, log messages)."""
    calls = _fake_gpu(monkeypatch, extractor, fits=fits)
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        features = cache.extract_features(extractor, good_tiles(N_IMAGES), device=torch.device("cuda"),
                                          batch_size=BATCH)
    return features, calls, [r.getMessage() for r in caplog.records]


def test_oom_halves_the_batch_until_it_fits(extractor, cpu_features, monkeypatch, caplog):
    features, calls, messages = _extract_on_fake_gpu(monkeypatch, caplog, extractor, fits=2)
    assert "GPU out of memory: retrying feature extraction with batch size 4" in messages
    assert "GPU out of memory: retrying feature extraction with batch size 2" in messages
    assert not any("on the CPU instead" in m for m in messages)
    assert all(device == "cuda" for device, _ in calls)
    # The first batch (8) tries 8, 4, then runs as 2+2+2+2; the next batch (4) starts at the size that
    # fitted instead of failing again at 4.
    assert [size for _, size in calls] == [8, 4, 2, 2, 2, 2, 2, 2]
    assert sum("retrying" in m for m in messages) == 2
    torch.testing.assert_close(features, cpu_features, rtol=1e-4, atol=1e-4)


def test_oom_at_batch_one_falls_back_to_the_cpu(extractor, cpu_features, monkeypatch, caplog):
    features, calls, messages = _extract_on_fake_gpu(monkeypatch, caplog, extractor, fits=0)
    assert [m for m in messages if "retrying" in m] == [
        f"GPU out of memory: retrying feature extraction with batch size {n}" for n in (4, 2, 1)]
    assert messages[-1] == "GPU out of memory at batch size 1: extracting features on the CPU instead"
    # Batch 8 tried at 8, 4, 2, 1 on the GPU, then the whole batch on the CPU; the next batch goes straight
    # to the CPU (the fallback sticks instead of failing again on every batch).
    gpu_calls = [size for device, size in calls if device == "cuda"]
    assert gpu_calls == [8, 4, 2, 1] and calls[-2:] == [("cpu", 8), ("cpu", 4)]
    torch.testing.assert_close(features, cpu_features, rtol=1e-4, atol=1e-4)


def test_oom_on_the_cpu_is_not_hidden(extractor, monkeypatch):
    def run(model, batch, device):
        raise torch.OutOfMemoryError("out of host memory (stand-in)")

    monkeypatch.setattr(cache, "_run", run)
    with pytest.raises(torch.OutOfMemoryError, match="host memory"):
        cache.extract_features(extractor, good_tiles(2), device="cpu", batch_size=2)

"""On a real GPU (skipped without one): an actual CUDA out-of-memory during feature extraction (the
allocator capped between what batch 1 and a full batch need) halves the batch, and with no room at all falls
back to the CPU; and a training interrupted on the GPU resumes to the same result."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from comet_studio.core.config import BackboneConfig, ModelConfig, TrainConfig
from comet_studio.core.data import scan_folder
from comet_studio.core.features import cache
from comet_studio.core.model import AnomalyModel, _quiet_extractor
from comet_studio.workflows.run import train_run
from tests.conftest import good_tiles

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SIZE = 512
BATCH = 32


def _peak_bytes(extractor, images: list, batch: int) -> int:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cache.extract_features(extractor, images[:batch], device="cuda", batch_size=batch)
    return torch.cuda.max_memory_reserved()


@pytest.fixture()
def capped_gpu():
    """Caps this process's CUDA allocator at ``limit`` bytes; lifted afterwards."""
    total = torch.cuda.get_device_properties(0).total_memory

    def cap(limit: int) -> None:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total))

    yield cap
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def test_real_cuda_oom_halves_the_batch_then_falls_back_to_the_cpu(capped_gpu, caplog):
    extractor = _quiet_extractor(BackboneConfig(image_size=SIZE))
    images = [str(p) for p in good_tiles(BATCH)]
    reference = cache.extract_features(extractor, images, device="cpu", batch_size=8)
    one, full = _peak_bytes(extractor, images, 1), _peak_bytes(extractor, images, BATCH)
    print(f"peak reserved at {SIZE} px: batch 1 {one / 2**20:.0f} MiB, batch {BATCH} {full / 2**20:.0f} MiB")

    capped_gpu(one + (full - one) // 6)  # room for a few images, not for the full batch
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        features = cache.extract_features(extractor, images, device="cuda", batch_size=BATCH)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    print("capped between:", retries)
    assert retries and not any("CPU instead" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(features, reference, rtol=1e-3, atol=1e-3)

    caplog.clear()
    extractor.to("cuda")
    capped_gpu(one // 4)  # the weights fit, not even one image's activations
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        features = cache.extract_features(extractor, images[:4], device="cuda", batch_size=4)
    messages = [r.getMessage() for r in caplog.records]
    print("capped below one image:", messages)
    assert messages[-1] == "GPU out of memory at batch size 1: extracting features on the CPU instead"
    torch.testing.assert_close(features, reference[:4], rtol=1e-3, atol=1e-3)


class Killed(Exception):
    pass


def test_a_gpu_run_resumes_to_the_same_result(tmp_path):
    folder = scan_folder(_tiles(tmp_path))
    model = ModelConfig(backbone=BackboneConfig(image_size=256))
    train = TrainConfig(rounds=4, steps_per_round=10, device="cuda")
    features = AnomalyModel(model, train=train).extract(folder.paths)
    whole = train_run(folder, tmp_path / "whole", model, train, features=features)

    def die(event):
        if event.round == 2:
            raise Killed

    with pytest.raises(Killed):
        train_run(folder, tmp_path / "cut", model, train, features=features, callback=die)
    resumed = train_run(folder, tmp_path / "cut", model, train, features=features, resume=True)
    assert resumed.resumed_after == 1
    same = np.array_equal(whole.model.result_.scores, resumed.model.result_.scores)
    print(f"GPU resume bit-identical: {same}; max score difference "
          f"{np.abs(whole.model.result_.scores - resumed.model.result_.scores).max():.3g}")
    np.testing.assert_allclose(whole.model.result_.scores, resumed.model.result_.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(whole.model.result_.weights > 0.999, resumed.model.result_.weights > 0.999)


def _tiles(tmp_path):
    import shutil

    root = tmp_path / "tiles"
    root.mkdir()
    for p in good_tiles(24):
        shutil.copy(p, root / p.name)
    return root

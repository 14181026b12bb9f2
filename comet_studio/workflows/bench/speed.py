"""Speed benchmark on real images: feature extraction, training rounds, memory fit, end-to-end inference, and
every ``--quality`` preset as a user runs it (the default detector and strategy).

Every number is wall-clock time on this machine with the current torch thread count; a backbone whose
weights are not installed is reported as ``unavailable: <reason>`` instead of failing the benchmark.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...core.config import BACKBONES, BackboneConfig, MemoryConfig, ModelConfig, TrainConfig, config_to_dict
from ...core.data.transforms import load_resized, to_tensor
from ...core.features import BackboneUnavailableError, resolve_device
from ...core.model import AnomalyModel
from ...core.progress import Progress
from ...core.quality import QUALITY, quality_configs

__all__ = ["SpeedConfig", "speed_images", "speed_bench", "speed_markdown"]


@dataclass(frozen=True, kw_only=True)
class SpeedConfig:
    """What to time. ``n_images`` real images are used for extraction (decoding included; best of
    ``repeats`` passes) and training: SimpleNet with the default strategy (``rounds`` and
    ``steps_per_round``: ``None`` = TrainConfig's), the memory ensemble's fit (its leave-one-out pass) with
    the default search and, with ``exact_reference``, with the exact float32 search over every patch;
    inference (backbone + head + map + post-processing on up to 32 decoded images) times ``repeats``
    passes at batch 1 and at batch 16 after one warm-up batch each. Each of ``presets`` is then timed as
    ``comet-studio train --quality NAME`` runs it: the default detector and strategy with the preset's
    backbone, rounds and memories, extraction + fit, and its inference (at ``image_size``; ``rounds`` and
    ``steps_per_round`` override every row, for quick looks)."""

    backbones: tuple[str, ...] = ("efficientnet-lite0", "efficientnet-lite2", "wide_resnet50_2")
    image_size: int = 256
    device: str = "auto"
    n_images: int = 32
    rounds: int | None = None
    steps_per_round: int | None = None
    repeats: int = 3
    exact_reference: bool = True
    presets: tuple[str, ...] = tuple(QUALITY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbones", tuple(self.backbones))
        object.__setattr__(self, "presets", tuple(self.presets))
        bad = [p for p in self.presets if p not in QUALITY]
        if bad:
            raise ValueError(f"unknown preset(s) {bad}; choose from {list(QUALITY)}")
        bad = [b for b in self.backbones if b not in BACKBONES]
        if bad or not self.backbones:
            raise ValueError(f"unknown or no backbone(s) {bad}; choose from {list(BACKBONES)}")
        if self.n_images < 4:
            raise ValueError(f"n_images must be >= 4 (training needs a few images), got {self.n_images}")
        if (self.rounds or 1) < 1 or (self.steps_per_round or 1) < 1 or self.repeats < 1:
            raise ValueError("rounds, steps_per_round and repeats must be >= 1")
        BackboneConfig(image_size=self.image_size)  # validates the size now


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(model: AnomalyModel, images: torch.Tensor, batch: int, repeats: int) -> float:
    """Images per second of the whole inference module (backbone + head + map + post-processing)."""
    inference, device = model.inference_, model.device_
    batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)] or [images[:batch]]
    with torch.inference_mode():
        inference(batches[0].to(device))  # warm-up: allocator, cuDNN autotune, lazy init
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            for x in batches:
                inference(x.to(device))
        _sync(device)
    return repeats * sum(len(x) for x in batches) / (time.perf_counter() - start)


def _memory(config: SpeedConfig, backbone: BackboneConfig, paths: Sequence[str], features: torch.Tensor,
            images: torch.Tensor, memory: MemoryConfig, progress: Progress | None) -> dict:
    """Fit seconds (the leave-one-out pass over every training image) and inference img/s of one memory."""
    try:
        model = AnomalyModel(ModelConfig(detector="memory", backbone=backbone, memory=memory),
                             train=TrainConfig(device=config.device, prior="none"))
        start = time.perf_counter()
        model.fit(paths, features=features, progress=progress)
        fit = time.perf_counter() - start
    except (ImportError, ValueError, RuntimeError) as error:
        return {"fit_seconds": f"unavailable: {type(error).__name__}: {error}"}
    return {"fit_seconds": fit, "inference_images_per_second_batch16": _throughput(model, images, 16, config.repeats)}


def _overridden(config: SpeedConfig, train: TrainConfig) -> TrainConfig:
    """``train`` with the bench's ``rounds`` and ``steps_per_round`` where they are set (quick looks)."""
    return dataclasses.replace(train, rounds=config.rounds or train.rounds,
                               steps_per_round=config.steps_per_round or train.steps_per_round)


def _one_backbone(name: str, paths: Sequence[str], images: torch.Tensor, config: SpeedConfig,
                  progress: Progress | None) -> dict:
    backbone = BackboneConfig(name=name, image_size=config.image_size)
    train = _overridden(config, TrainConfig(device=config.device))  # the default strategy
    model = AnomalyModel(ModelConfig(detector="simplenet", backbone=backbone), train=train)
    try:
        model.extract(paths[:2])  # builds the backbone (and fails here when its weights are missing)
    except BackboneUnavailableError as error:
        return {"unavailable": str(error)}
    extract_seconds = []
    for _ in range(config.repeats):  # best of a few passes: the least disturbed by other processes
        start = time.perf_counter()
        features = model.extract(paths, progress=progress)
        extract_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    model.fit(paths, features=features, progress=progress)
    fit_seconds = time.perf_counter() - start
    # Round 0 carries one-off costs (CUDA context, cuDNN autotuning, allocator growth): time the rest.
    rounds = [h["seconds"] for h in model.result_.history][1:] or [h["seconds"] for h in model.result_.history]
    result = {
        "feature_dim": int(features.shape[1]), "grid": list(features.shape[2:]),
        "extract_images_per_second": len(paths) / min(extract_seconds),
        "simplenet_comet_seconds_per_round": sum(rounds) / max(len(rounds), 1),
        "simplenet_comet_fit_seconds": fit_seconds,
        "inference_images_per_second_batch1": _throughput(model, images, 1, config.repeats),
        "inference_images_per_second_batch16": _throughput(model, images, 16, config.repeats),
    }
    backbone = model.config.backbone  # the features just extracted (a memory's own padding would differ)
    fast = _memory(config, backbone, paths, features, images, MemoryConfig(), progress)
    result["memory_fit_seconds"] = fast["fit_seconds"]
    result["memory_inference_images_per_second_batch16"] = fast.get("inference_images_per_second_batch16", "")
    if config.exact_reference:  # the exact float32 search over every patch, timed in the same run
        exact_search = MemoryConfig(candidates=0, query_stride=1, probe=1.0)
        exact = _memory(config, backbone, paths, features, images, exact_search, progress)
        result["memory_exact_fit_seconds"] = exact["fit_seconds"]
        result["memory_exact_inference_images_per_second_batch16"] = exact.get(
            "inference_images_per_second_batch16", "")
    return result


def _one_preset(name: str, paths: Sequence[str], images: torch.Tensor, config: SpeedConfig,
                progress: Progress | None) -> dict:
    """One ``--quality`` preset end to end on ``paths``: extraction (decoding included), fit, inference."""
    model_config, train = quality_configs(name, ModelConfig(), TrainConfig(device=config.device))
    model_config = dataclasses.replace(model_config, backbone=dataclasses.replace(model_config.backbone,
                                                                                  image_size=config.image_size))
    train = _overridden(config, train)
    model = AnomalyModel(model_config, train=train)
    try:
        model.extract(paths[:2])
    except BackboneUnavailableError as error:
        return {"unavailable": str(error)}
    start = time.perf_counter()
    features = model.extract(paths, progress=progress)
    extract = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(paths, features=features, progress=progress)
    fit = time.perf_counter() - start
    return {"detector": model_config.detector, "backbone": model_config.backbone.name,
            "image_size": config.image_size, "rounds": train.rounds, "n_memories": model_config.memory.n_memories,
            "extract_seconds": extract, "fit_seconds": fit, "train_seconds": extract + fit,
            "inference_images_per_second_batch1": _throughput(model, images, 1, config.repeats),
            "inference_images_per_second_batch16": _throughput(model, images, 16, config.repeats)}


def speed_images(root: str | Path, n: int) -> list[str]:
    """The first ``n`` training images of an MVTec category, of the first category under an MVTec root, or
    of a plain folder (recursively)."""
    from ...core.data import load_mvtec, scan_folder
    from .grid import find_categories

    try:
        category = next(iter(find_categories(root).values()))
    except FileNotFoundError:
        return list(scan_folder(root, min_images=4).paths[:n])
    return list(load_mvtec(category).train[:n])


def speed_bench(images: Sequence[str | Path], config: SpeedConfig | None = None, *,
                progress: Progress | None = None) -> dict:
    """Time every backbone of ``config`` on the first ``n_images`` of ``images`` (real image paths);
    ``progress(stage, done, total)`` hears the extraction and every fit (the timed passes run minutes on a CPU)."""
    config = config or SpeedConfig()
    paths = [str(p) for p in images][: config.n_images]
    if len(paths) < 4:
        raise ValueError(f"the speed bench needs at least 4 images, got {len(paths)}")
    device = resolve_device(config.device)
    info = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "CPU", "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "n_images": len(paths), "settings": config_to_dict(config)}
    # The inference batches, decoded once for every row: up to 32 of the images at the bench's size.
    images = to_tensor([load_resized(p, config.image_size) for p in paths[:32]])
    info["backbones"] = {name: _one_backbone(name, paths, images, config, progress) for name in config.backbones}
    info["presets"] = {name: _one_preset(name, paths, images, config, progress) for name in config.presets}
    return info


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def speed_markdown(result: dict) -> str:
    """speed.md: one row per backbone (unavailable ones say why)."""
    s = result["settings"]
    lines = ["# CoMet Studio speed", "",
             f"Device {result['device']} ({result['device_name']}), torch {result['torch']}, "
             f"{result['torch_threads']} torch thread(s); image size {s['image_size']}, {result['n_images']} "
             f"real images. SimpleNet with the default strategy (fit s: the whole training; s/round: mean after "
             f"the first round); memory fit s: its leave-one-out pass, default search and (exact) the float32 "
             f"search over every patch; extraction includes JPEG decoding; inference is the whole module on "
             f"decoded tensors.", "",
             "| backbone | extract img/s | SimpleNet fit s | s/round | infer img/s @1 | infer img/s @16 | "
             "memory fit s | memory img/s @16 | memory (exact) fit s | memory (exact) img/s @16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["backbones"].items():
        if "unavailable" in r:
            lines.append(f"| {name} | unavailable: {r['unavailable']} | | | | | | | | |")
            continue
        keys = ("extract_images_per_second", "simplenet_comet_fit_seconds", "simplenet_comet_seconds_per_round",
                "inference_images_per_second_batch1", "inference_images_per_second_batch16", "memory_fit_seconds",
                "memory_inference_images_per_second_batch16", "memory_exact_fit_seconds",
                "memory_exact_inference_images_per_second_batch16")
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
    if result.get("presets"):
        lines += ["", "Presets as `comet-studio train --quality NAME` runs them (the default detector and strategy; "
                  "train s = extraction + fit, on the same images):", "",
                  "| preset | detector | backbone | memories | rounds | train s | of which fit s | "
                  "infer img/s @1 | infer img/s @16 |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in result["presets"].items():
            if "unavailable" in r:
                lines.append(f"| {name} | unavailable: {r['unavailable']} | | | | | | | |")
                continue
            keys = ("detector", "backbone", "n_memories", "rounds", "train_seconds", "fit_seconds",
                    "inference_images_per_second_batch1", "inference_images_per_second_batch16")
            lines.append(f"| {name} | " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"

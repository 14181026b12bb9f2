"""Deployable models: ONNX (the whole inference path as one graph), TorchScript, or one ``.safetensors`` file.

ONNX and TorchScript export ``ServingModel`` (``core/io/serving.py``):

- input ``images``: uint8 RGB (batch, height, width, 3), any batch size, height and width; the graph resizes to
  the model's ``image_size`` as the Python pipeline does (OpenCV area/bilinear) and normalises;
- outputs, named after ``Scores``: ``image_score`` (batch,) float32, normalised so the run's threshold is 0.5;
  ``pred_label`` (batch,) bool = image_score > 0.5; ``anomaly_map`` (batch, S, S) float32 on the same scale;
  ``raw_score`` (batch,) float32 on the head's own scale.

The threshold and score normalisation are PostProcessor buffers, so they are constants in the graph. The
ONNX ``metadata_props`` (and the TorchScript archive's ``extra/comet_studio.json``) hold the backbone, image
size, layers, threshold, median, config and comet-studio version. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..._version import __version__
from ..detectors.nearest import exact_search
from ..detectors.registry import detector_spec
from ..detectors.inference import Scores
from .atomic import atomic_path
from .checkpoint import FORMAT_VERSION, write_checkpoint_file
from .serving import ServingModel
from .quiet import quiet_stdout

__all__ = ["FORMATS", "ExportError", "export_model", "export_metadata", "INPUT_NAME", "OUTPUT_NAMES"]

ExportFormat = Literal["onnx", "torchscript", "safetensors"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript", "safetensors")
INPUT_NAME = "images"
OUTPUT_NAMES: tuple[str, ...] = Scores._fields
OPSET = 18
TORCHSCRIPT_METADATA = "comet_studio.json"


class ExportError(RuntimeError):
    """The model could not be exported, or the exported file does not reproduce PyTorch's outputs."""


def export_model(model, path: str | Path, format: ExportFormat = "onnx", *, verify: bool = True) -> Path:
    """Write a fitted ``AnomalyModel`` to ``path`` as ``format``; returns the path.

    ``verify`` runs the exported file (onnxruntime, or the reloaded TorchScript module) on a batch of a
    different size and shape from the one traced, and raises ``ExportError`` if it disagrees with PyTorch.
    """
    if format not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {format!r}")
    exports = detector_spec(model.config.detector).exports
    if format not in exports:
        raise ExportError(f"the {model.config.detector} detector cannot be exported as {format}; it exports "
                          f"{', '.join(exports)}")
    path = Path(path)
    tensors, meta = model.checkpoint()  # raises NotFittedError before any file is touched
    if format == "safetensors":
        return write_checkpoint_file(path, tensors, meta)
    # A CPU copy: the trace then holds no CUDA device, and the caller's model is left as it was.
    serving = ServingModel(copy.deepcopy(model.inference_).cpu()).eval()
    size = serving.resize.size
    example = _frames(2, size + 32, size + 16, seed=0)  # not square and not image_size: the resize is traced
    exporter = _export_onnx if format == "onnx" else _export_torchscript
    with atomic_path(path) as tmp:
        runner = exporter(serving, example, tmp, export_metadata(meta))
        if verify:
            _verify(serving, runner, format)
    return path


def export_metadata(meta: dict) -> dict[str, str]:
    """String key/value metadata for an exported graph, from a checkpoint config (``AnomalyModel.checkpoint``)."""
    config = meta["model"]
    size = config["backbone"]["image_size"]
    return {
        "comet_studio_version": __version__,
        "format_version": str(FORMAT_VERSION),
        "detector": config["detector"],
        "backbone": config["backbone"]["name"],
        "image_size": str(size),
        "layers": ",".join(meta["layers"]),
        "feature_dim": str(meta["feature_dim"]),
        "grid": json.dumps(meta["grid"]),
        "threshold": repr(float(meta["threshold"])),
        "median": repr(float(meta["median"])),
        "normalisation": json.dumps(meta["normalisation"]),
        "model_config": json.dumps(config),
        "input": f"{INPUT_NAME}: uint8 RGB (batch, height, width, 3), any size; resized inside to {size}x{size} "
                 f"(area when both sides shrink, else bilinear, as OpenCV) and normalised inside",
        "outputs": f"image_score (batch,) float32, 0.5 = threshold; pred_label (batch,) bool = image_score > 0.5; "
                   f"anomaly_map (batch, {size}, {size}) float32 on the image_score scale; raw_score (batch,) "
                   f"float32 on the detector's scale",
    }


def _frames(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator)


@contextlib.contextmanager
def _quiet_tracing():
    # Shape checks inside the backbone become constants when traced; they are constant, since the graph
    # always resizes to image_size first. TorchScript's deprecation notice is not the user's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.", category=FutureWarning)
        yield


def _export_onnx(serving: ServingModel, example: torch.Tensor, tmp: Path, metadata: dict[str, str]):
    from torch.export import Dim

    dims = {0: Dim("batch", min=1), 1: Dim("height", min=2), 2: Dim("width", min=2)}
    try:
        with _quiet_tracing(), quiet_stdout():
            program = torch.onnx.export(
                serving, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"images": dims}, opset_version=OPSET, verbose=False)
    except Exception as error:  # the exporter raises many error types; all mean "this head does not export"
        raise ExportError(f"ONNX export of the {metadata['detector']} model failed: {error}") from error
    program.model.metadata_props.update(metadata)
    program.model.producer_name = "comet-studio"
    program.model.producer_version = __version__
    program.save(str(tmp), external_data=False)  # one self-contained file (small models: < 2 GB)

    def run(frames: np.ndarray) -> list[np.ndarray]:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames})

    return run


def _export_torchscript(serving: ServingModel, example: torch.Tensor, tmp: Path, metadata: dict[str, str]):
    try:
        with _quiet_tracing(), torch.no_grad():
            traced = torch.jit.trace(serving, (example,), check_trace=False)
    except Exception as error:
        raise ExportError(f"TorchScript trace of the {metadata['detector']} model failed: {error}") from error
    with _quiet_tracing():
        torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})

    def run(frames: np.ndarray) -> list[np.ndarray]:
        with _quiet_tracing(), torch.no_grad():
            outputs = torch.jit.load(str(tmp), map_location="cpu")(torch.from_numpy(frames))
        return [o.numpy() for o in outputs]

    return run


def _verify(serving: ServingModel, run, format: str, tolerance: float = 1e-3) -> None:
    """The exported file on a batch of another size and shape (proves the dynamic axes) vs PyTorch."""
    size = serving.resize.size
    frames = _frames(3, size * 2 + 8, size - 8, seed=1)
    with torch.no_grad(), exact_search():  # the graph scores every patch exactly; so must its reference
        expected = serving(frames)
    got = run(frames.numpy())
    for name, want, have in zip(OUTPUT_NAMES, expected, got):
        if tuple(have.shape) != tuple(want.shape):
            raise ExportError(f"{format} export: output {name} has shape {tuple(have.shape)} for a batch of 3 "
                              f"{tuple(frames.shape[1:3])} images, PyTorch gives {tuple(want.shape)}")
        if want.dtype == torch.bool:
            continue  # the label follows the score; a score on the threshold may flip it
        worst = float(np.abs(have.astype(np.float64) - want.numpy().astype(np.float64)).max())
        if worst > tolerance:
            raise ExportError(f"{format} export: output {name} differs from PyTorch by {worst:.3g} "
                              f"(tolerance {tolerance}); the exported graph is not faithful")

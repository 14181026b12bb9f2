"""Score images with an exported ONNX model (``export_model(..., "onnx")``) through onnxruntime.

Returns the same ``Prediction`` as ``AnomalyModel.predict``, so batch prediction, the app and the CLI take either.
Images are resized on the CPU with the Python pipeline's own resize (``load_resized``) before they are
batched: images of different sizes then share a batch, and the graph's in-graph resize is the identity, so
the scores equal PyTorch's. (A production line can feed raw frames instead; see ``core/io/serving.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.transforms import load_resized
from ..detectors.inference import Scores
from ..model import ImageItem, Prediction
from ..progress import Progress

__all__ = ["OnnxModelError", "OnnxPredictor"]

_INPUT = "images"


class OnnxModelError(ValueError):
    """An .onnx file that onnxruntime cannot load, or that comet-studio did not export."""


def _providers(device: str, available: list[str]) -> list[str | tuple[str, dict]]:
    """onnxruntime providers for ``auto | cpu | cuda | cuda:N``; CPU is always the fallback."""
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not has_cuda:
        raise RuntimeError(f"device {device!r} requested but this onnxruntime has no CUDA provider "
                           f"(available: {available}); install onnxruntime-gpu or use --device cpu")
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OnnxPredictor:
    """An exported comet-studio ONNX model, ready to score images.

    >>> OnnxPredictor("model.onnx").predict(["a.png", "b.png"]).image_score  # 0.5 = threshold

    ``metadata`` holds the export's metadata_props (backbone, image_size, threshold, ...); ``providers``
    the onnxruntime providers actually in use.
    """

    def __init__(self, path: str | Path, *, device: str = "auto") -> None:
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {self.path}")
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), providers=_providers(device, onnxruntime.get_available_providers()))
        except Exception as error:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...) derive from Exception
            raise OnnxModelError(f"{self.path} cannot be loaded by onnxruntime ({error})") from error
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = {o.name for o in self.session.get_outputs()}
        if inputs != [_INPUT] or not set(Scores._fields) <= outputs or "image_size" not in self.metadata:
            raise OnnxModelError(
                f"{self.path} is not a comet-studio export: expected input [{_INPUT!r}], outputs "
                f"{list(Scores._fields)} and an image_size in its metadata; got inputs {inputs}, outputs "
                f"{sorted(outputs)}. Export it with: comet-studio export RUN_DIR --format onnx --out FILE")
        self.image_size = int(self.metadata["image_size"])
        self.providers: list[str] = self.session.get_providers()

    def predict(self, images: Sequence[ImageItem], *, batch_size: int = 16,
                progress: Progress | None = None) -> Prediction:
        """Score images (paths or RGB/grey uint8 arrays) in batches of ``batch_size``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(images), batch_size):
            batch = np.stack([load_resized(item, self.image_size) for item in images[start:start + batch_size]])
            parts.append(self.session.run(list(Scores._fields), {_INPUT: batch}))
            if progress is not None:
                progress("predict", min(start + batch_size, len(images)), len(images))
        if not parts:
            size = self.image_size
            return Prediction(image_score=np.zeros(0), pred_label=np.zeros(0, dtype=bool),
                              anomaly_map=np.zeros((0, size, size), dtype=np.float32), raw_score=np.zeros(0))
        score, label, heatmap, raw = (np.concatenate(column) for column in zip(*parts))
        return Prediction(image_score=score.astype(np.float64), pred_label=label.astype(bool),
                          anomaly_map=heatmap.astype(np.float32), raw_score=raw.astype(np.float64))

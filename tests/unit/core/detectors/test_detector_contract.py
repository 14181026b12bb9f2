"""One contract over every registered detector (core/detectors/registry.py), on tiny real images: it fits,
scores, survives a save/load round trip unchanged, and every export format the registry grants it reproduces
the eager model on images it was not trained on; a format it does not have is refused with a clear error.

Adding a detector to the registry adds it here, with its default settings (``MODEL_SETTINGS`` only shrinks
the trained heads, to keep each case to seconds). The memory scores through two test-time views
(``TEST_VIEWS``), so every export's parity covers the views' path through the graph too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, TrainConfig
from comet_studio.core.config import FlowConfig, SimpleNetConfig
from comet_studio.core.data.transforms import load_resized, to_tensor
from comet_studio.core.detectors.registry import REGISTRY
from comet_studio.core.io.export import FORMATS, INPUT_NAME, OUTPUT_NAMES, ExportError, export_model
from tests.conftest import COOKIES, MAGNETIC, TINY, good_tiles

# ~1e-4 of the output's own scale: every detector's eager CPU path computes what its graph does, in float32.
# The memory's eager path shortlists neighbours in bfloat16 but measures the shortlist exactly in float32,
# and coarse-to-fine patch scoring is off below a 24x24 grid (TINY gives 8x8), so the distances match too.
RELATIVE_TOLERANCE = 1e-4
EAGER_OUTPUTS = ("image_score", "anomaly_map", "raw_score")

# Small settings, so every case takes seconds: the contract is about shapes and round trips, not quality.
MODEL_SETTINGS = {"simplenet": SimpleNetConfig(hidden_dim=64), "flow": FlowConfig(n_blocks=2, hidden_ratio=0.25)}
TEST_VIEWS = {"memory": ("hflip", "rot90")}
TRAIN = TrainConfig(rounds=2, steps_per_round=3, batch_size=4, device="cpu", comet=CoMetConfig(task_size=4))


def _unseen_images() -> list[Path]:
    """Real images the models never train on: a good and two defective magnetic tiles, a defective cookie."""
    tiles = [sorted((MAGNETIC / "test" / d).glob("*.jpg"))[0] for d in ("good", "blowhole", "crack")]
    return tiles + sorted((COOKIES / "test" / "anomaly").glob("*.jpg"))[:1]


def _model_config(name: str) -> ModelConfig:
    extra = {name: MODEL_SETTINGS[name]} if name in MODEL_SETTINGS else {}
    return ModelConfig(detector=name, backbone=BackboneConfig(image_size=TINY), tta=TEST_VIEWS.get(name, ()),
                       **extra)


@pytest.fixture(scope="module")
def train_paths() -> list[Path]:
    return good_tiles(8)


@pytest.fixture(scope="module")
def train_features(train_paths) -> torch.Tensor:
    """Every detector here shares one backbone setting, so the training features are extracted once."""
    return AnomalyModel(_model_config("simplenet"), train=TRAIN).extract(train_paths)


@pytest.fixture(scope="module")
def unseen_frames() -> np.ndarray:
    """(N, TINY, TINY, 3) uint8: the unseen images as the Python pipeline resizes them."""
    return np.stack([load_resized(p, TINY) for p in _unseen_images()])


@pytest.fixture(scope="module")
def fit_detector(train_paths, train_features):
    """``fit_detector(name)``: that detector fitted once for the whole module (every test reuses the fit)."""
    fits: dict[str, AnomalyModel] = {}

    def fit(name: str) -> AnomalyModel:
        if name not in fits:
            fits[name] = AnomalyModel(_model_config(name), train=TRAIN).fit(train_paths, features=train_features)
        return fits[name]

    return fit


@pytest.fixture(params=list(REGISTRY))
def fitted(request, fit_detector) -> AnomalyModel:
    return fit_detector(request.param)


def _eager(model: AnomalyModel, frames: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        scores = model.inference_(to_tensor(list(frames)))
    return {name: getattr(scores, name).numpy() for name in OUTPUT_NAMES}


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    for name in EAGER_OUTPUTS:
        assert got[name].shape == want[name].shape, (what, name)
        scale = max(1.0, float(np.abs(want[name]).max()))
        worst = float(np.abs(got[name].astype(np.float64) - want[name]).max())
        assert worst <= RELATIVE_TOLERANCE * scale, f"{what}: {name} differs by {worst:.3g} (scale {scale:.3g})"
    assert np.array_equal(got["pred_label"], got["image_score"] > 0.5), what


def test_fit_gives_one_finite_result_per_training_image(fitted, train_paths):
    result = fitted.result_
    n = len(train_paths)
    assert result.scores.shape == result.weights.shape == result.rejected.shape == (n,)
    assert np.isfinite(result.scores).all() and np.isfinite(result.threshold)
    assert ((result.weights >= 0) & (result.weights <= 1)).all()
    assert result.history and not result.stopped


def test_scores_unseen_images_with_one_map_each(fitted, unseen_frames):
    prediction = fitted.predict(list(unseen_frames))
    n = len(unseen_frames)
    assert prediction.image_score.shape == prediction.raw_score.shape == prediction.pred_label.shape == (n,)
    assert prediction.anomaly_map.shape == (n, TINY, TINY)
    assert np.isfinite(prediction.image_score).all() and np.isfinite(prediction.anomaly_map).all()
    assert np.array_equal(prediction.pred_label, prediction.image_score > 0.5)


def test_save_and_load_give_identical_scores(fitted, unseen_frames, tmp_path):
    loaded = AnomalyModel.load(fitted.save(tmp_path / "model"), device="cpu")
    assert loaded.config == fitted.config
    want, got = _eager(fitted, unseen_frames), _eager(loaded, unseen_frames)
    for name in OUTPUT_NAMES:
        assert np.array_equal(got[name], want[name]), name


def _run_onnx(path: Path, frames: np.ndarray) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames})))


def _run_torchscript(path: Path, frames: np.ndarray) -> dict[str, np.ndarray]:
    # One call: the profiling executor's optimisation passes would cost more than they save.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        outputs = torch.jit.load(str(path), map_location="cpu")(torch.from_numpy(frames))
    return {name: value.numpy() for name, value in zip(OUTPUT_NAMES, outputs)}


GRAPH_RUNNERS = {"onnx": (".onnx", _run_onnx), "torchscript": (".pt", _run_torchscript)}


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
@pytest.mark.parametrize("name,format", [(name, format) for name, spec in REGISTRY.items()
                                         for format in spec.exports if format in GRAPH_RUNNERS])
def test_exported_graph_matches_eager_on_unseen_images(fit_detector, unseen_frames, name, format, tmp_path):
    fitted = fit_detector(name)
    suffix, run = GRAPH_RUNNERS[format]
    path = tmp_path / f"model{suffix}"
    # export_model's own check uses random frames; this one uses real unseen images at a tighter tolerance.
    export_model(fitted, path, format, verify=False)
    _assert_close(run(path, unseen_frames), _eager(fitted, unseen_frames), f"{name} {format}")


def test_unsupported_formats_are_refused_with_the_supported_ones_named(fitted, tmp_path):
    spec = REGISTRY[fitted.config.detector]
    for format in sorted(set(FORMATS) - set(spec.exports)):
        with pytest.raises(ExportError, match=f"the {spec.name} detector cannot be exported as {format}"):
            export_model(fitted, tmp_path / f"model.{format}", format)
    with pytest.raises(ValueError, match=r"export format must be one of .*got 'tflite'"):
        export_model(fitted, tmp_path / "model.tflite", "tflite")
    assert not any(tmp_path.iterdir())  # refused before any file is written

"""Deployable models on real images: the ONNX graph (resize + normalisation + thresholds inside) scores like
PyTorch for any batch size and frame size, carries its metadata, and serves ``comet-studio predict``;
TorchScript and single-file safetensors exports reproduce the model too."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from safetensors import safe_open

from comet_studio import __version__
from comet_studio.cli.main import main
from comet_studio.core import (AnomalyModel, BackboneConfig, CoMetConfig, ModelConfig, NotFittedError, Prediction,
                               TrainConfig)
from comet_studio.core.data.images import read_image
from comet_studio.core.data.transforms import load_resized, resize_image, to_tensor
from comet_studio.core.io import atomic_path
from comet_studio.core.io.export import OUTPUT_NAMES, TORCHSCRIPT_METADATA, export_model
from comet_studio.core.io.serving import CvResize
from comet_studio.core.io.onnx_predictor import OnnxModelError, OnnxPredictor
from comet_studio.workflows.run import train_run
from tests.conftest import COOKIES, MAGNETIC, TINY, good_tiles

TOLERANCE = 1e-4


def _test_images() -> list[Path]:
    """Real test images of several sizes: good and defective magnetic tiles and cookies."""
    tiles = [p for d in ("good", "blowhole", "crack") for p in sorted((MAGNETIC / "test" / d).glob("*.jpg"))[:2]]
    return tiles + sorted((COOKIES / "test" / "anomaly").glob("*.jpg"))[:1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("export_data")
    for p in good_tiles(12):
        shutil.copy(p, data / p.name)
    model = ModelConfig(backbone=BackboneConfig(image_size=TINY))
    train = TrainConfig(rounds=2, steps_per_round=3, batch_size=4, device="cpu", comet=CoMetConfig(task_size=4))
    return train_run(data, tmp_path_factory.mktemp("export_run") / "run", model, train).run_dir


@pytest.fixture(scope="module")
def model(run_dir) -> AnomalyModel:
    return AnomalyModel.load(run_dir, device="cpu")


@pytest.fixture(scope="module")
def onnx_path(run_dir) -> Path:
    """Exported once through the CLI; every ONNX test below uses this file."""
    path = run_dir.parent / "deploy" / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def session(onnx_path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def _frame(path: Path) -> np.ndarray:
    image = read_image(path)
    return np.array(np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3])  # writable


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_pytorch_on_the_same_preprocessed_batch(model, session, batch):
    images = [load_resized(p, TINY) for p in _test_images()[:batch]]
    outputs = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"images": np.stack(images)})))
    with torch.no_grad():
        expected = model.inference_(to_tensor(images))
    for name in ("image_score", "anomaly_map", "raw_score"):
        reference = getattr(expected, name).numpy()
        assert outputs[name].shape == reference.shape
        assert np.abs(outputs[name] - reference).max() < TOLERANCE, name
    assert outputs["anomaly_map"].shape == (batch, TINY, TINY)
    assert outputs["pred_label"].dtype == np.bool_
    assert np.array_equal(outputs["pred_label"], outputs["image_score"] > 0.5)


def test_onnx_resizes_raw_frames_like_the_python_pipeline(model, session):
    """Frames of any size go in as they are; the in-graph resize reproduces OpenCV's, so the scores equal
    AnomalyModel.predict on the image files."""
    paths = _test_images()
    expected = model.predict(paths)
    for i, path in enumerate(paths):
        frame = _frame(path)
        score, label, heatmap = session.run(["image_score", "pred_label", "anomaly_map"], {"images": frame[None]})
        assert abs(score[0] - expected.image_score[i]) < 1e-3, (path.name, frame.shape)
        assert heatmap.shape == (1, TINY, TINY)
        assert label[0] == (score[0] > 0.5)
    frames = np.stack([_frame(paths[0])] * 2)  # a batch of raw frames: dynamic batch and size together
    assert np.allclose(session.run(["image_score"], {"images": frames})[0], expected.image_score[0], atol=1e-3)


def _cv_resize(image: np.ndarray, size: int) -> np.ndarray:
    return CvResize(size)(torch.from_numpy(image)[None])[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("size", [TINY, 256])
def test_cv_resize_reproduces_opencv(size):
    """Bit-exact for bilinear (enlarging, mixed), integer area shrinks (2x2 rounds half up) and identity;
    fractional area shrinks and real photos within one grey level on a rare near-tie (OpenCV's float32 sums)."""
    rng = np.random.default_rng(0)
    exact = [(40, 30), (100, 60), (200, 255), (250, 40), (1, 1), (size, size), (2 * size, 2 * size),
             (4 * size, 2 * size), (3 * size, 3 * size), (2 * size, 6 * size)]
    near = [(size + 44, size + 76), (5 * size + 17, 3 * size + 1), (size * 8 // 7, size * 8 // 7)]
    for height, width in exact + near:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        difference = np.abs(_cv_resize(image, size) - resize_image(image, size))
        if (height, width) in exact:
            assert difference.max() == 0, (height, width, size)
        assert difference.max() <= 1 and (difference > 0).mean() < 2e-3, (height, width, size)
    for path in _test_images():
        frame = _frame(path)
        difference = np.abs(_cv_resize(frame, size) - resize_image(frame, size))
        assert difference.max() <= 1 and (difference > 0).mean() < 2e-3, path.name


def test_onnx_metadata(model, onnx_path):
    graph = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["comet_studio_version"] == __version__
    assert meta["backbone"] == "efficientnet-lite0"
    assert meta["image_size"] == str(TINY)
    assert meta["layers"] == ",".join(model.inference_.extractor.layers)
    assert float(meta["threshold"]) == pytest.approx(model.threshold_)
    assert float(meta["median"]) == pytest.approx(float(model.inference_.post.median))
    assert [o.name for o in graph.graph.output] == list(OUTPUT_NAMES)
    assert min(i.version for i in graph.opset_import if i.domain in ("", "ai.onnx")) >= 17
    images = graph.graph.input[0].type.tensor_type
    assert images.elem_type == onnx.TensorProto.UINT8
    assert all(d.dim_param for d in images.shape.dim[:3])  # batch, height and width are dynamic


def test_cli_predict_with_onnx_writes_the_same_csv_as_pytorch(run_dir, onnx_path, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in _test_images():
        shutil.copy(p, images / p.name)
    (images / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(onnx_path), str(images), "--out", str(tmp_path / "onnx"), "--batch-size", "3"]) == 0
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "torch"), "--no-heatmaps",
                 "--device", "cpu"]) == 0
    rows = [{r["path"]: r for r in csv.DictReader(open(tmp_path / d / "predictions.csv"))} for d in ("onnx", "torch")]
    assert sorted(rows[0]) == sorted(rows[1]) and len(rows[0]) == len(_test_images()) + 1
    assert rows[0][str(images / "broken.png")]["error"]  # unreadable files are reported, not fatal
    for path, torch_row in rows[1].items():
        onnx_row = rows[0][path]
        assert onnx_row["label"] == torch_row["label"] and onnx_row["error"] == torch_row["error"]
        if torch_row["score"]:
            assert abs(float(onnx_row["score"]) - float(torch_row["score"])) < TOLERANCE
    assert len(list((tmp_path / "onnx" / "heatmaps").glob("*.png"))) == len(_test_images())


def test_onnx_predictor_returns_a_prediction_and_rejects_foreign_files(model, onnx_path, tmp_path):
    paths = _test_images()[:3]
    prediction = OnnxPredictor(onnx_path, device="cpu").predict(paths, batch_size=2)
    expected = model.predict(paths)
    assert type(prediction) is type(expected) is Prediction
    # One vocabulary: Prediction's fields are the graph's outputs (Scores), in the same order.
    assert tuple(f.name for f in dataclasses.fields(Prediction)) == OUTPUT_NAMES
    assert np.allclose(prediction.image_score, expected.image_score, atol=TOLERANCE)
    assert np.allclose(prediction.raw_score, expected.raw_score, atol=TOLERANCE)
    assert np.allclose(prediction.anomaly_map, expected.anomaly_map, atol=TOLERANCE)
    assert np.array_equal(prediction.pred_label, expected.pred_label)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(OnnxModelError, match="cannot be loaded"):
        OnnxPredictor(garbage)
    foreign = tmp_path / "identity.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(OnnxModelError, match="not a comet-studio export"):
        OnnxPredictor(foreign)


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
def test_torchscript_export_reproduces_the_model(model, tmp_path):
    path = export_model(model, tmp_path / "model.pt", "torchscript")
    extra = {TORCHSCRIPT_METADATA: ""}
    traced = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[TORCHSCRIPT_METADATA])["image_size"] == str(TINY)
    images = [load_resized(p, TINY) for p in _test_images()[:3]]
    with torch.no_grad():
        got = traced(torch.from_numpy(np.stack(images)))
        expected = model.inference_(to_tensor(images))
    for name, value in zip(OUTPUT_NAMES, got):
        assert torch.allclose(value.float(), getattr(expected, name).float(), atol=TOLERANCE), name


def test_safetensors_export_is_one_loadable_file(model, tmp_path):
    path = export_model(model, tmp_path / "model.safetensors", "safetensors")
    with safe_open(str(path), framework="pt") as handle:
        assert '"image_size": 64' in handle.metadata()["comet_studio"]
    loaded = AnomalyModel.load(path, device="cpu")
    paths = _test_images()[:3]
    assert np.array_equal(loaded.predict(paths).image_score, model.predict(paths).image_score)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp files left


def test_export_errors_and_atomic_writes(model, tmp_path):
    with pytest.raises(ValueError, match="export format must be one of"):
        export_model(model, tmp_path / "m.bin", "tflite")
    with pytest.raises(NotFittedError):
        export_model(AnomalyModel(), tmp_path / "m.onnx")
    target = tmp_path / "model.onnx"
    target.write_text("previous export")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous export"  # the old file is untouched, and no temp file is left
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_memory_big_enough_for_the_cpu_speed_ups_exports_and_verifies(tmp_path):
    """On a CPU a memory of real size is scored by the clustered search on a coarse grid (within their
    tolerance of the exact search); the graph scores every patch exactly. The export's check must compare the
    graph with the exact scores: against the fast ones it refused every default model of real size."""
    from comet_studio.core.config import with_settings
    from comet_studio.core.detectors.nearest import exact_search

    # 192 px: a 24 x 24 grid (the coarse grid's smallest); 2 memories of all 12 x 576 patches (>= 4,096 rows).
    config = with_settings(ModelConfig(backbone=BackboneConfig(image_size=192)),
                           {"memory.n_memories": 2, "memory.fraction": 1.0})
    model = AnomalyModel(config, train=TrainConfig(device="cpu")).fit([str(p) for p in good_tiles(12)])
    images = [str(p) for p in _test_images()]
    fast = model.predict(images).image_score
    with exact_search():
        exact = model.predict(images).image_score
    assert not np.allclose(fast, exact, rtol=0, atol=1e-6)  # the speed-ups are on: this is the case that failed
    path = export_model(model, tmp_path / "model.onnx")  # raises ExportError if the graph is not faithful
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = np.stack([load_resized(p, 192) for p in images[:3]])
    got = session.run(["image_score"], {"images": frames})[0]
    with exact_search():
        want = model.predict(images[:3]).image_score
    assert np.allclose(got, want, rtol=0, atol=1e-3)

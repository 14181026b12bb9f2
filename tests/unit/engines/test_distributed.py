"""The Ray engine gives the same answers as the local one, on a local Ray cluster of 2 CPUs: predict (CSV,
Parquet, heatmaps, a streamed list file), train-all (resumable) and the bench grid.

Ray tasks and actors run torch with one thread per CPU; the local references here run with one thread too,
so that both sides do the same float arithmetic (with other thread counts they still agree to ~1e-6).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "comet-studio[ray]"')
pytest.importorskip("ray.data", reason='Ray Data is not installed: pip install "comet-studio[ray]"')

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from comet_studio.cli.main import main  # noqa: E402
from comet_studio.workflows.bench import BenchConfig, read_results, run_bench  # noqa: E402
from comet_studio.core.config import BackboneConfig, ModelConfig, TrainConfig  # noqa: E402
from comet_studio.core.data.folder import ImageFolder  # noqa: E402
from comet_studio.engines import make_engine  # noqa: E402
from comet_studio.workflows.predict.batch_predict import predict_images  # noqa: E402
from comet_studio.workflows.plant import read_summary, train_all  # noqa: E402
from comet_studio.workflows.run import train_run  # noqa: E402
from tests.conftest import MAGNETIC, TINY, good_tiles  # noqa: E402
from tests.unit.workflows.plant_fixtures import build_plant  # noqa: E402

# Ray Data copies its DataContext, touching deprecated fields: its warnings, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOLERANCE = 1e-5
MODEL = ModelConfig(backbone=BackboneConfig(image_size=TINY))
TRAIN = TrainConfig(rounds=1, steps_per_round=2, device="cpu")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_run(ImageFolder("tiles", tuple(str(p) for p in good_tiles(12)), ()), out, MODEL, TRAIN)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of 14 real tiles (good and defective, one sub-folder), an unreadable PNG and a note; and a
    list file outside it naming 4 more tiles by relative path, a missing file and a comment."""
    root = tmp_path_factory.mktemp("images")
    folder, listed = root / "line1", root / "line2"
    (folder / "cam2").mkdir(parents=True)
    listed.mkdir()
    test = MAGNETIC / "test"
    for p in sorted((test / "good").glob("*.jpg"))[:6] + sorted((test / "blowhole").glob("*.jpg"))[:6]:
        shutil.copy(p, folder / p.name)
    for p in sorted((test / "crack").glob("*.jpg"))[:2]:
        shutil.copy(p, folder / "cam2" / p.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.md").write_text("shift 2\n")
    for p in sorted((test / "fray").glob("*.jpg"))[:4]:
        shutil.copy(p, listed / p.name)
    names = sorted(p.name for p in listed.iterdir())
    (root / "more.txt").write_text("# second camera\n" + "".join(f"line2/{n}\n" for n in names)
                                   + "line2/missing.jpg\n\n")
    return [str(folder), str(root / "more.txt")]


def _rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        assert (x["label"], x["heatmap"], x["error"]) == (y["label"], y["heatmap"], y["error"])
        if x["score"] != "":
            assert abs(float(x["score"]) - float(y["score"])) <= TOLERANCE
            assert abs(float(x["raw_score"]) - float(y["raw_score"])) <= TOLERANCE


def test_predict_local_and_ray_write_the_same_files(cluster, one_thread, run_dir, inputs, tmp_path):
    local = predict_images(run_dir, inputs, tmp_path / "local", heatmaps=True, batch_size=4, device="cpu")
    assert main(["predict", str(run_dir), *inputs, "--out", str(tmp_path / "ray"), "--engine", "ray",
                 "--batch-size", "4", "--device", "cpu"]) == 0
    files = [sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*")) for d in ("local", "ray")]
    assert files[0] == files[1]  # no spool or temporary file left behind either
    rows = _rows(local.table)
    _same_rows(rows, _rows(tmp_path / "ray" / "predictions.csv"))
    assert local.scored == 18 and local.failed == 3 and len(rows) == 21
    errors = {r["path"].rsplit("/", 1)[-1]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"broken.png", "notes.md", "missing.jpg"}
    assert "not an image file extension" in errors["notes.md"] and "cannot access" in errors["missing.jpg"]
    listed = Path(inputs[1]).parent / "line2"  # list entries follow the folder's, relative to the list file
    assert [r["path"] for r in rows[-5:]] == [str(listed / n) for n in sorted(os.listdir(listed))] + [
        str(listed / "missing.jpg")]
    heatmaps = [r["heatmap"] for r in rows if r["heatmap"]]
    assert len(heatmaps) == 18 and all(r["heatmap"] == f"heatmaps/{i:06d}_{Path(r['path']).stem}.png"
                                       for i, r in enumerate(rows) if not r["error"])
    for name in heatmaps:
        a, b = (np.asarray(Image.open(tmp_path / d / name), dtype=int) for d in ("local", "ray"))
        # Scores agree to 1e-5, but one that sits on a colour-map boundary lands in the next of 256 JET colours:
        # up to 5 levels a channel, 2-3 after the 0.45 blend. Rare pixels may do that; no pixel may do more.
        diff = np.abs(a - b).max(axis=2)
        assert a.shape == b.shape and diff.max() <= 3 and (diff > 1).mean() < 0.01


def test_predict_to_parquet_on_ray_matches_the_local_csv(cluster, one_thread, run_dir, inputs, tmp_path):
    import pyarrow.parquet as pq

    local = predict_images(run_dir, inputs, tmp_path / "local", batch_size=8, device="cpu")
    summary = predict_images(run_dir, inputs, tmp_path / "ray", engine="ray", fmt="parquet", batch_size=8,
                             device="cpu", workers=1)
    table = pq.read_table(summary.table).to_pylist()
    rows = _rows(local.table)
    assert summary.heatmaps is None and [r["path"] for r in table] == [r["path"] for r in rows]
    for row, rec in zip(rows, table):
        assert rec["error"] == row["error"] and rec["label"] == row["label"]
        if row["score"]:
            assert abs(rec["score"] - float(row["score"])) <= TOLERANCE
        else:
            assert np.isnan(rec["score"])


def test_train_all_on_ray_equals_local_and_resumes(cluster, one_thread, tmp_path):
    plant = build_plant(tmp_path / "plant")
    shutil.rmtree(plant / "cookies")  # two categories and the broken one keep the test short
    local = train_all(plant, tmp_path / "local", MODEL, TRAIN)
    with make_engine("ray") as engine:  # joins the test's cluster
        remote = train_all(plant, tmp_path / "ray", MODEL, TRAIN, engine=engine)
        again = train_all(plant, tmp_path / "ray", MODEL, TRAIN, engine=engine)
    keys = ("category", "images", "skipped_files", "rejected", "status")
    assert [tuple(r[k] for k in keys) for r in local.rows] == [tuple(r[k] for k in keys) for r in remote.rows]
    assert [r["status"] for r in remote.rows] == ["error", "trained", "trained"]
    assert "NotEnoughImagesError" in remote.rows[0]["error"] and remote.rows[0]["error"] == local.rows[0]["error"]
    assert [r["status"] for r in again.rows] == ["error", "done before", "done before"]
    assert [r["status"] for r in read_summary(tmp_path / "ray" / "summary.csv")] == ["error", "done before",
                                                                                      "done before"]
    for name in ("magnetic_tile", "solar_cells"):
        a, b = (_rows(tmp_path / d / name / "samples.csv") for d in ("local", "ray"))
        assert [r["path"] for r in a] == [r["path"] for r in b]
        assert max(abs(float(x["score"]) - float(y["score"])) for x, y in zip(a, b)) <= TOLERANCE
        assert [x["weight"] for x in a] == [y["weight"] for y in b]


def test_bench_grid_on_ray_equals_local_and_resumes(cluster, one_thread, tiny_mvtec, tmp_path):
    config = BenchConfig(noise=(0.25,), methods=("baseline", "comet"), image_size=TINY, rounds=1,
                         steps_per_round=2, device="cpu")
    run_bench(tiny_mvtec, tmp_path / "local", config, png=False)
    with make_engine("ray") as engine:
        remote = run_bench(tiny_mvtec, tmp_path / "ray", config, png=False, engine=engine)
        again = run_bench(tiny_mvtec, tmp_path / "ray", config, png=False, engine=engine)
    assert (remote.computed, remote.failed, again.computed, again.reused) == (2, 0, 0, 2)
    a, b = ({r["method"]: r for r in read_results(tmp_path / d / "results.csv")} for d in ("local", "ray"))
    assert sorted(a) == sorted(b) == ["baseline", "comet"]
    for method in a:
        for column in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "planted_auroc", "rejection_recall"):
            assert np.isclose(a[method][column], b[method][column], atol=TOLERANCE, equal_nan=True), column
        assert (a[method]["n_train"], a[method]["n_planted"]) == (b[method]["n_train"], b[method]["n_planted"])

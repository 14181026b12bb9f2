"""Streaming prediction on the local engine (no Ray needed): the listing, the table, heatmaps, errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from comet_studio.cli.main import main
from comet_studio.core.config import BackboneConfig, ModelConfig, TrainConfig
from comet_studio.core.data.folder import ImageFolder
from comet_studio.workflows.predict.batch_predict import predict_images
from comet_studio.workflows.predict.listing import iter_listing, read_spool_block, spool_listing
from comet_studio.core.model import AnomalyModel
from comet_studio.workflows.run import train_run
from tests.conftest import MAGNETIC, TINY, good_tiles


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_run(ImageFolder("tiles", tuple(str(p) for p in good_tiles(10)), ()), out,
              ModelConfig(backbone=BackboneConfig(image_size=TINY)), TrainConfig(rounds=1, steps_per_round=2,
                                                                                 device="cpu"))
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """line1/: 5 defective tiles, a sub-folder with 2 more, an unreadable PNG, a mask and a hidden file;
    list.txt: 3 tiles of line2/ (relative), one absolute, a missing file, a non-image, comments, blanks."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "line1" / "cam2").mkdir(parents=True)
    (root / "line2").mkdir()
    crack = sorted((MAGNETIC / "test" / "crack").glob("*.jpg"))
    for p in crack[:5]:
        shutil.copy(p, root / "line1" / p.name)
    for p in crack[5:7]:
        shutil.copy(p, root / "line1" / "cam2" / p.name)
    (root / "line1" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    shutil.copy(MAGNETIC / "ground_truth" / "crack" / f"{crack[0].stem}_mask.png", root / "line1" / "a_mask.png")
    (root / "line1" / ".hidden.jpg").write_bytes(b"")
    for p in crack[7:10]:
        shutil.copy(p, root / "line2" / p.name)
    absolute = good_tiles(1)[0]
    lines = ["# camera 2", *(f"line2/{p.name}" for p in crack[7:10]), "", str(absolute), "line2/gone.jpg",
             "line2/readme.md"]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root, [str(root / "line1"), str(root / "list.txt")], crack, absolute


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_listing_streams_folders_and_list_files_in_order(inputs, tmp_path):
    root, paths, crack, absolute = inputs
    listed = list(iter_listing(paths))
    # os.walk order: a folder's files (sorted), then its sub-folders; masks and hidden files are left out
    expected = ([str(root / "line1" / p.name) for p in crack[:5]] + [str(root / "line1" / "zz_broken.png")]
                + [str(root / "line1" / "cam2" / p.name) for p in crack[5:7]]
                + [str(root / "line2" / p.name) for p in crack[7:10]]
                + [str(absolute), str(root / "line2" / "gone.jpg"), str(root / "line2" / "readme.md")])
    assert [e.path for e in listed] == expected
    assert [e.index for e in listed] == list(range(len(listed)))
    assert [e.path for e in listed if e.error] == [str(root / "line2" / "readme.md")]
    blocks = spool_listing(paths, tmp_path / "spool", 4)
    assert [b.count for b in blocks] == [4, 4, 4, 2]
    assert [e for b in blocks for e in read_spool_block(tmp_path / "spool", b)] == listed
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list(iter_listing([str(root / "nope")]))


def test_local_predict_writes_one_row_per_entry_and_heatmaps(run_dir, inputs, tmp_path):
    root, paths, crack, absolute = inputs
    summary = predict_images(run_dir, paths, tmp_path / "out", heatmaps=True, batch_size=3, device="cpu")
    rows = _rows(summary.table)
    assert (summary.scored, summary.failed, len(rows)) == (11, 3, 14)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"zz_broken.png", "gone.jpg", "readme.md"}
    assert "cannot access file" in errors["gone.jpg"] and "not an image file extension" in errors["readme.md"]
    scored = [r for r in rows if not r["error"]]
    model = AnomalyModel.load(run_dir, device="cpu")
    expected = model.predict([r["path"] for r in scored])
    assert np.allclose([float(r["score"]) for r in scored], expected.image_score, atol=1e-5)
    assert [r["label"] for r in scored] == ["anomalous" if x else "good" for x in expected.pred_label]
    heatmaps = sorted(p.name for p in (tmp_path / "out" / "heatmaps").iterdir())
    assert heatmaps == sorted(Path(r["heatmap"]).name for r in scored)
    assert all(r["heatmap"] == f"heatmaps/{i:06d}_{Path(r['path']).stem}.png" for i, r in enumerate(rows)
               if not r["error"])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_parquet_holds_the_same_rows(run_dir, inputs, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is needed for --format parquet")
    _, paths, _, _ = inputs
    csv_rows = _rows(predict_images(run_dir, paths, tmp_path / "csv", batch_size=5, device="cpu").table)
    table = pq.read_table(predict_images(run_dir, paths, tmp_path / "pq", fmt="parquet", batch_size=5,
                                         device="cpu").table).to_pylist()
    assert [r["path"] for r in table] == [r["path"] for r in csv_rows]
    assert [r["error"] for r in table] == [r["error"] for r in csv_rows]
    for rec, row in zip(table, csv_rows):
        assert (np.isnan(rec["score"]) if not row["score"] else abs(rec["score"] - float(row["score"])) < 1e-6)


def test_cli_predict_reports_and_refuses_ray_only_flags(run_dir, inputs, tmp_path, capsys):
    _, paths, _, _ = inputs
    assert main(["predict", str(run_dir), *paths, "--out", str(tmp_path / "cli"), "--no-heatmaps",
                 "--device", "cpu"]) == 0
    assert "11 image(s) scored; 3 could not be" in capsys.readouterr().out
    assert main(["predict", str(run_dir), *paths, "--out", str(tmp_path / "x"), "--workers", "2"]) == 2
    assert "apply to --engine ray" in capsys.readouterr().err

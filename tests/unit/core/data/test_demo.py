"""The ELPV demo folder: N real solar cells, a few defective, labels kept outside, deterministic."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from comet_studio.core.data import scan_folder
from comet_studio.core.data.demo import build_elpv_demo

pytest.importorskip("elpv_dataset")


def test_builds_the_requested_images(tmp_path):
    demo = build_elpv_demo(tmp_path / "demo", n_good=10, n_defective=3)
    assert len(demo.paths) == 13 and len(demo.defective) == 3
    assert set(demo.defective) <= set(demo.paths)
    folder = scan_folder(demo.root)
    assert sorted(folder.paths) == sorted(demo.paths) and not folder.skipped
    # No labels inside the training folder: neutral names, the answer key lies beside it.
    assert all(Path(p).name.startswith("cell_") for p in demo.paths)
    assert {p.name for p in demo.root.iterdir()} == {Path(p).name for p in demo.paths}
    with open(demo.root.parent / "answer_key.csv", newline="") as handle:
        key = {row["file"]: row["defective"] for row in csv.DictReader(handle)}
    assert sum(v == "1" for v in key.values()) == 3


def test_deterministic_and_reused(tmp_path):
    a = build_elpv_demo(tmp_path / "a", n_good=8, n_defective=2, seed=3)
    b = build_elpv_demo(tmp_path / "b", n_good=8, n_defective=2, seed=3)
    assert [Path(p).name for p in a.paths] == [Path(p).name for p in b.paths]
    assert [Path(p).read_bytes() for p in a.paths] == [Path(p).read_bytes() for p in b.paths]
    assert [Path(p).name for p in a.defective] == [Path(p).name for p in b.defective]
    stamp = Path(a.paths[0]).stat().st_mtime_ns
    again = build_elpv_demo(tmp_path / "a", n_good=8, n_defective=2, seed=3)
    assert again == a and Path(a.paths[0]).stat().st_mtime_ns == stamp
    other = build_elpv_demo(tmp_path / "c", n_good=8, n_defective=2, seed=4)
    sources = lambda d: (d.root.parent / "answer_key.csv").read_text()  # noqa: E731
    assert sources(other) != sources(a)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="cell_type"):
        build_elpv_demo(tmp_path, cell_type="thin-film")
    with pytest.raises(ValueError, match="only"):
        build_elpv_demo(tmp_path, n_defective=100_000)


def test_elpv_bench_category_is_an_mvtec_layout_with_disjoint_splits(tmp_path):
    from comet_studio.core.data import load_mvtec
    from comet_studio.core.data.elpv import build_elpv_category

    root = build_elpv_category(tmp_path / "elpv", n_train=12, n_test_good=5, n_test_defective=4, seed=1)
    data = load_mvtec(root)
    assert len(data.train) == 12 and sum(i.label for i in data.test) == 4 and len(data.test) == 9
    names = [Path(p).name for p in data.train] + [Path(i.path).name for i in data.test]
    assert len(set(names)) == len(names)  # no cell in two splits
    assert all(i.mask is None for i in data.test)  # image labels only
    stamp = (root / "train" / "good" / Path(data.train[0]).name).stat().st_mtime_ns
    again = build_elpv_category(tmp_path / "elpv", n_train=12, n_test_good=5, n_test_defective=4, seed=1)
    assert again == root and (root / "train" / "good" / Path(data.train[0]).name).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="defective"):
        build_elpv_category(tmp_path / "big", n_test_defective=100_000)


def test_hidden_defects_found_counts_the_least_trusted():
    from comet_studio.core.data.demo import hidden_defects_found

    paths = ["a", "b", "c", "d", "e"]
    weights = np.array([1.0, 0.0, 1.0, 0.0, 0.5])
    scores = np.array([9.0, 1.0, 0.0, 2.0, 5.0])
    assert hidden_defects_found(paths, weights, scores, ["b", "d"]) == (2, 2)
    assert hidden_defects_found(paths, weights, scores, ["a", "d"]) == (1, 2)


def test_the_demo_test_set_holds_out_the_demo_cells(tmp_path):
    from comet_studio.core.data import load_mvtec
    from comet_studio.core.data.elpv import build_demo_test_set

    demo = build_elpv_demo(tmp_path / "demo", n_good=10, n_defective=3)
    root = build_demo_test_set(demo.root, tmp_path / "demo-test", n_good=8, n_defective=8)
    data = load_mvtec(root)
    assert not data.train and len(data.test) == 16 and sum(i.label for i in data.test) == 8
    with open(demo.root.parent / "answer_key.csv", newline="") as handle:
        used = {row["source"] for row in csv.DictReader(handle)}
    assert used.isdisjoint(Path(i.path).name for i in data.test)
    with pytest.raises(FileNotFoundError, match="answer key"):
        build_demo_test_set(tmp_path, tmp_path / "x")

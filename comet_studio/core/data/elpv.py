"""A labelled bench category of real solar cells, built in MVTec AD layout from the installed ``elpv-dataset``.

The third development data set (beside magnetic tile and cookies): functional cells (defect probability 0)
for ``train/good`` and ``test/good``, clearly defective ones (probability 1) for ``test/defective``; the
bench's ``overlap``/``move`` protocols plant copies of those into the training folder. Image labels only
(ELPV has no masks), so pixel metrics are NaN for this category. One cell type per category: mono and poly
cells look nothing alike, and a line makes one kind. The images are CC BY-NC-SA 4.0 (see ``demo.py``):
they are copied from the user's installed package at run time, never shipped.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .demo import elpv_data_dir, elpv_labels

__all__ = ["build_elpv_category", "build_demo_test_set", "elpv_split"]

_STAMP = "SOURCE.md"


def elpv_split(cell_type: str, n_train: int, n_test_good: int, n_test_defective: int, *, seed: int = 0,
               exclude: set[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """Disjoint (train good, test good, test defective) relative ELPV paths of one ``cell_type``, seeded;
    ``exclude`` removes paths first (e.g. the demo folder's cells, so a demo test set is held out)."""
    if cell_type not in ("mono", "poly"):
        raise ValueError(f"cell_type must be 'mono' or 'poly', got {cell_type!r}")
    if n_train < 0 or min(n_test_good, n_test_defective) < 1:
        raise ValueError("need n_train >= 0 and at least one good and one defective test image")
    exclude = exclude or set()
    rows = [r for r in elpv_labels(elpv_data_dir())
            if r[2] == cell_type and r[0] not in exclude and Path(r[0]).name not in exclude]
    good = sorted(p for p, prob, _ in rows if prob == 0.0)
    bad = sorted(p for p, prob, _ in rows if prob == 1.0)
    if len(good) < n_train + n_test_good or len(bad) < n_test_defective:
        raise ValueError(f"elpv holds {len(good)} functional and {len(bad)} defective {cell_type} cells; asked for "
                         f"{n_train + n_test_good} functional and {n_test_defective} defective")
    rng = np.random.default_rng(seed)
    good = [good[i] for i in rng.permutation(len(good))]
    bad = [bad[i] for i in rng.permutation(len(bad))]
    return (sorted(good[:n_train]), sorted(good[n_train:n_train + n_test_good]), sorted(bad[:n_test_defective]))


def build_elpv_category(out_dir: str | Path, *, cell_type: str = "mono", n_train: int = 200, n_test_good: int = 100,
                        n_test_defective: int = 100, seed: int = 0, exclude: set[str] | None = None) -> Path:
    """Write ``out_dir`` = ``train/good``, ``test/good``, ``test/defective`` (+ ``SOURCE.md``) and return it.

    Deterministic for given arguments; a complete folder built with the same arguments is reused. Built in a
    temporary folder and renamed into place, so a half-built category is never seen."""
    out = Path(out_dir)
    stamp = (f"# ELPV {cell_type} cells (elpv-dataset, CC BY-NC-SA 4.0, Deitsch et al.)\n\n"
             f"train/good {n_train}, test/good {n_test_good}, test/defective {n_test_defective}; seed {seed}; "
             f"{len(exclude or ())} cells held out.\n"
             f"Functional = defect probability 0, defective = probability 1. Built by comet-studio from the "
             f"installed package; image labels only (no masks).\n")
    if (out / _STAMP).exists() and (out / _STAMP).read_text() == stamp:
        return out
    train, test_good, test_bad = elpv_split(cell_type, n_train, n_test_good, n_test_defective, seed=seed,
                                            exclude=exclude)
    data = elpv_data_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    for folder, paths in (("train/good", train), ("test/good", test_good), ("test/defective", test_bad)):
        (staging / folder).mkdir(parents=True)
        for source in paths:
            shutil.copyfile(data / source, staging / folder / Path(source).name)
    (staging / _STAMP).write_text(stamp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def build_demo_test_set(demo_root: str | Path, out_dir: str | Path, *, n_good: int = 30, n_defective: int = 30,
                        seed: int = 0) -> Path:
    """A labelled test set for the demo folder at ``demo_root``: ``out_dir`` in MVTec layout (``test/good``,
    ``test/defective``, an empty ``train/``) of ELPV cells of the demo's type that are not in the demo, so the
    Test tab shows image AUROC and a ROC curve without any data of one's own."""
    key = Path(demo_root).parent / "answer_key.csv"
    if not key.exists():
        raise FileNotFoundError(f"{demo_root} is not a demo folder: no answer key at {key}")
    with open(key, newline="") as handle:
        used = {row["source"] for row in csv.DictReader(handle)}
    return build_elpv_category(out_dir, cell_type="mono", n_train=0, n_test_good=n_good,
                               n_test_defective=n_defective, seed=seed, exclude=used)

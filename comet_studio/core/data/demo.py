"""A demo folder of real solar-cell images, built at run time from the installed ``elpv-dataset`` package.

The folder mimics what a user brings: mostly functional cells with a few defective ones mixed in, no labels,
neutral file names in a shuffled order. The answer key is written beside the folder (never inside it), so a
demo can show afterwards which cells CoMet down-weighted. The images are CC BY-NC-SA 4.0 (Deitsch et al.,
ELPV): they are copied from the package on the user's machine and never shipped with comet-studio.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DemoFolder", "ELPV_LICENSE", "build_elpv_demo", "elpv_data_dir", "elpv_labels", "read_demo_folder",
           "hidden_defects_found"]

ELPV_LICENSE = "CC BY-NC-SA 4.0 (ELPV dataset, Deitsch et al.)"
_KEY = "answer_key.csv"


@dataclass(frozen=True)
class DemoFolder:
    """``root`` holds the images; ``defective`` lists the paths of the defective ones (the hidden labels)."""

    root: Path
    paths: tuple[str, ...]
    defective: tuple[str, ...]


def elpv_data_dir() -> Path:
    """The ``data/`` folder of the installed elpv-dataset package (labels.csv + images/)."""
    try:
        import elpv_dataset
    except ImportError as error:
        raise RuntimeError("the demo folder needs the elpv-dataset package: pip install elpv-dataset") from error
    data = Path(elpv_dataset.__file__).parent / "data"
    if not (data / "labels.csv").exists():
        raise RuntimeError(f"elpv-dataset is installed but {data / 'labels.csv'} is missing; reinstall it")
    return data


def elpv_labels(data: Path) -> list[tuple[str, float, str]]:
    """(relative image path, defect probability, cell type) rows of the package's labels.csv."""
    rows = []
    for line in (data / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], float(parts[1]), parts[2]))
    return rows


def _pick(rows, probability: float, cell_type: str, n: int, rng: np.random.Generator) -> list[str]:
    pool = sorted(path for path, p, kind in rows if p == probability and kind == cell_type)
    if len(pool) < n:
        raise ValueError(f"elpv holds only {len(pool)} {cell_type} cells with defect probability {probability}, "
                         f"asked for {n}")
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]


def _read_key(root: Path) -> DemoFolder | None:
    key = root.parent / _KEY
    if not key.exists():
        return None
    with open(key, newline="") as handle:
        rows = list(csv.DictReader(handle))
    paths = tuple(str(root / row["file"]) for row in rows)
    if not all(Path(p).exists() for p in paths):
        return None
    defective = tuple(str(root / row["file"]) for row in rows if row["defective"] == "1")
    return DemoFolder(root=root, paths=paths, defective=defective)


def read_demo_folder(root: str | Path) -> DemoFolder | None:
    """The demo folder at ``root`` with its answer key (written beside it), or None for any other folder."""
    return _read_key(Path(root))


def hidden_defects_found(paths: list[str], weights: np.ndarray, scores: np.ndarray,
                         defective: tuple[str, ...] | list[str]) -> tuple[int, int]:
    """(found, hidden): how many of the ``defective`` paths are among the ``len(defective)`` least-trusted
    training images (lowest weight first, ties broken by the higher score)."""
    hidden = set(map(str, defective))
    order = np.lexsort((-np.asarray(scores, dtype=float), np.asarray(weights, dtype=float)))
    lowest = {str(paths[i]) for i in order[:len(hidden)]}
    return len(lowest & hidden), len(hidden)


def build_elpv_demo(out_dir: str | Path, *, n_good: int = 60, n_defective: int = 6, cell_type: str = "mono",
                    seed: int = 0) -> DemoFolder:
    """Copy ``n_good`` functional (defect probability 0) and ``n_defective`` defective (probability 1) cells
    of one ``cell_type`` ("mono" or "poly") into ``out_dir/images`` as ``cell_000.png``...

    Deterministic for a given seed; an existing complete folder is reused. Built in a temporary folder and
    renamed into place, so a half-built folder is never seen (e.g. by two app processes at once).
    """
    if cell_type not in ("mono", "poly"):
        raise ValueError(f"cell_type must be 'mono' or 'poly', got {cell_type!r}")
    if n_good < 1 or n_defective < 0:
        raise ValueError(f"need n_good >= 1 and n_defective >= 0, got {n_good} and {n_defective}")
    out = Path(out_dir)
    existing = _read_key(out / "images")
    if existing is not None and len(existing.paths) == n_good + n_defective \
            and len(existing.defective) == n_defective:
        return existing
    data = elpv_data_dir()
    rows = elpv_labels(data)
    rng = np.random.default_rng(seed)
    chosen = [(p, 0) for p in _pick(rows, 0.0, cell_type, n_good, rng)]
    chosen += [(p, 1) for p in _pick(rows, 1.0, cell_type, n_defective, rng)]
    order = rng.permutation(len(chosen))  # defective cells land anywhere in the listing
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=out))
    (staging / "images").mkdir()
    with open(staging / _KEY, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "source", "defective"])
        for k, index in enumerate(order):
            source, defective = chosen[index]
            name = f"cell_{k:03d}.png"
            shutil.copyfile(data / source, staging / "images" / name)
            writer.writerow([name, Path(source).name, defective])
    for name in ("images", _KEY):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)
    folder = _read_key(out / "images")
    assert folder is not None  # just written
    return folder

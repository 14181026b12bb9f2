"""Shared fixtures: small real image sets from ../shared/data, copied into temporary folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAGNETIC = SHARED / "magnetic_tile"
COOKIES = SHARED / "cookies"
TINY = 64  # image size for fast tests (a multiple of 32)

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if not MAGNETIC.exists():
        skip = pytest.mark.skip(reason=f"shared data not found at {SHARED}")
        for item in items:
            item.add_marker(skip)


def good_tiles(n: int, offset: int = 0) -> list[Path]:
    return sorted((MAGNETIC / "train" / "good").glob("*.jpg"))[offset:offset + n]


def plant_defect(image: np.ndarray, seed: int) -> np.ndarray:
    """An obvious defect: a bright blob and a dark scratch."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    h, w = out.shape[:2]
    cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    yy, xx = np.ogrid[:h, :w]
    blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 6) ** 2
    out[blob] = 255
    row = rng.integers(h // 5, 4 * h // 5)
    out[row:row + max(2, h // 30), w // 8: 7 * w // 8] = 0
    return out


@pytest.fixture(scope="session")
def planted_folder(tmp_path_factory) -> tuple[Path, list[str]]:
    """24 real good magnetic tiles + 3 copies of other tiles with obvious painted defects."""
    root = tmp_path_factory.mktemp("planted")
    for p in good_tiles(24):
        shutil.copy(p, root / p.name)
    planted = []
    for i, p in enumerate(good_tiles(3, offset=100)):
        image = np.asarray(Image.open(p).convert("L"))
        target = root / f"zz_defect_{i}.png"
        Image.fromarray(plant_defect(image, i)).save(target)
        planted.append(str(target))
    return root, planted


@pytest.fixture(scope="session")
def tiny_mvtec(tmp_path_factory) -> Path:
    """A small MVTec-layout category built from magnetic tile: 16 train, 6 good + 6 defective test images."""
    root = tmp_path_factory.mktemp("mvtec") / "tile"
    (root / "train" / "good").mkdir(parents=True)
    (root / "test" / "good").mkdir(parents=True)
    for p in good_tiles(16):
        shutil.copy(p, root / "train" / "good" / p.name)
    for p in sorted((MAGNETIC / "test" / "good").glob("*.jpg"))[:6]:
        shutil.copy(p, root / "test" / "good" / p.name)
    for defect in ("blowhole", "crack"):
        (root / "test" / defect).mkdir(parents=True)
        (root / "ground_truth" / defect).mkdir(parents=True)
        for p in sorted((MAGNETIC / "test" / defect).glob("*.jpg"))[:3]:
            shutil.copy(p, root / "test" / defect / p.name)
            mask = MAGNETIC / "ground_truth" / defect / f"{p.stem}_mask.png"
            shutil.copy(mask, root / "ground_truth" / defect / mask.name)
    return root

"""A small plant built from real images: two MVTec-layout categories, one raw folder, one broken folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import COOKIES, MAGNETIC

__all__ = ["build_plant", "GOOD_CATEGORIES", "BROKEN_CATEGORY"]

GOOD_CATEGORIES = ("cookies", "magnetic_tile", "solar_cells")
BROKEN_CATEGORY = "empty_line"


def _copy(files: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy(path, target / path.name)


def _mvtec_copy(source: Path, target: Path, n_train: int, n_test: int) -> None:
    _copy(sorted((source / "train" / "good").glob("*.jpg"))[:n_train], target / "train" / "good")
    defects = sorted(p.name for p in (source / "test").iterdir() if p.is_dir() and p.name != "good")
    for name in ("good", defects[0]):
        _copy(sorted((source / "test" / name).glob("*.jpg"))[:n_test], target / "test" / name)


def _elpv_images(n: int) -> list[Path]:
    from comet_studio.core.data.demo import elpv_data_dir

    return sorted((elpv_data_dir() / "images").glob("*.png"))[:n]


def build_plant(root: Path, *, broken: bool = True) -> Path:
    """``root``/magnetic_tile and /cookies (MVTec layout, 10 train images each), /solar_cells (12 raw elpv
    cells) and, with ``broken``, /empty_line: a folder whose only files are a corrupt PNG and a note."""
    _mvtec_copy(MAGNETIC, root / "magnetic_tile", 10, 2)
    _mvtec_copy(COOKIES, root / "cookies", 10, 2)
    _copy(_elpv_images(12), root / "solar_cells")
    if broken:
        bad = root / BROKEN_CATEGORY
        bad.mkdir(parents=True)
        (bad / "frame_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        (bad / "notes.txt").write_text("camera offline\n")
    return root

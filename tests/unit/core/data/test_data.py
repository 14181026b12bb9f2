"""Loading raw folders and labelled layouts: bad files are skipped with reasons, never crash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comet_studio.core.data import (NotEnoughImagesError, contaminate, load_kolektor, load_mvtec, read_image,
                                    read_mask, scan_folder)
from comet_studio.core.data.images import ImageReadError
from tests.conftest import COOKIES, MAGNETIC, good_tiles


def _folder_with_bad_files(root: Path) -> Path:
    for p in good_tiles(9):
        shutil.copy(p, root / p.name)
    (root / "sub").mkdir()
    shutil.copy(good_tiles(1, offset=20)[0], root / "sub" / "nested.jpg")
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    data = good_tiles(1, offset=30)[0].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.txt").write_text("hello")
    return root


def test_scan_folder_skips_bad_files_with_reasons(tmp_path):
    folder = scan_folder(_folder_with_bad_files(tmp_path))
    assert len(folder) == 10  # 9 + nested
    reasons = {Path(s.path).name: s.reason for s in folder.skipped}
    assert reasons["empty.png"].startswith("empty file")
    assert "not an image" in reasons["text.png"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "extension" in reasons["notes.txt"]
    assert any(p.endswith("nested.jpg") for p in folder.paths)


def test_empty_and_small_folders_give_clear_errors(tmp_path):
    with pytest.raises(NotEnoughImagesError, match="0 usable image"):
        scan_folder(tmp_path)
    for p in good_tiles(3):
        shutil.copy(p, tmp_path / p.name)
    with pytest.raises(NotEnoughImagesError, match="3 usable image.*at least 8"):
        scan_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        scan_folder(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        scan_folder(tmp_path / good_tiles(1)[0].name)


def test_read_image_formats(tmp_path):
    rgb = np.asarray(Image.open(good_tiles(1)[0]).convert("RGB"))
    gray16 = (rgb[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).save(tmp_path / "image.tiff")
    Image.fromarray(rgb).save(tmp_path / "image.bmp")
    for name in ("g16.png", "rgba.png", "palette.png", "image.tiff", "image.bmp"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == rgb.shape, name
    # 16-bit keeps its contrast when reduced to 8 bits
    assert read_image(tmp_path / "g16.png")[:, :, 0].std() > 10
    with pytest.raises(ImageReadError, match="too small"):
        Image.fromarray(rgb[:4, :4]).save(tmp_path / "tiny.png")
        read_image(tmp_path / "tiny.png")


def test_symlink_loop_is_not_followed_forever(tmp_path):
    for p in good_tiles(8):
        shutil.copy(p, tmp_path / p.name)
    os.symlink(tmp_path, tmp_path / "loop")
    assert len(scan_folder(tmp_path)) == 8


def test_mvtec_layout_and_masks():
    data = load_mvtec(MAGNETIC)
    assert len(data.train) == 714
    labels = [i.label for i in data.test]
    assert labels.count(0) == 238 and labels.count(1) == 392
    anomalous = next(i for i in data.test if i.label)
    mask = read_mask(anomalous.mask)
    assert mask.dtype == bool and mask.any()
    # cookies: palette masks, any non-zero index is defect
    cookie = next(i for i in load_mvtec(COOKIES).test if i.label)
    assert read_mask(cookie.mask).any()


def test_kolektor_layout(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        for i, p in enumerate(good_tiles(3, offset=10 if split == "test" else 0)):
            image = np.asarray(Image.open(p).convert("L"))
            Image.fromarray(image).save(tmp_path / split / f"{i}.png")
            mask = np.zeros_like(image)
            if i == 0:
                mask[5:15, 5:15] = 255
            Image.fromarray(mask).save(tmp_path / split / f"{i}_GT.png")
    data = load_kolektor(tmp_path)
    assert len(data.train) == 3 and len(data.test) == 3
    assert [i.label for i in data.test] == [1, 0, 0]
    # a raw-folder scan of a KolektorSDD2 folder ignores the GT masks
    assert all(not p.endswith("_GT.png") for p in scan_folder(tmp_path, min_images=1).paths)


def test_contamination_is_seeded_and_moves_anomalies():
    data = load_mvtec(MAGNETIC)
    a = contaminate(data, 0.1, seed=3)
    b = contaminate(data, 0.1, seed=3)
    c = contaminate(data, 0.1, seed=4)
    assert a.planted == b.planted and a.planted != c.planted
    assert len(a.planted) == round(0.1 * 714)
    test_paths = {i.path for i in a.test}
    assert not test_paths & set(a.planted)  # "move": no overlap
    assert len(a.train) == 714 + len(a.planted)
    overlap = contaminate(data, 0.1, seed=3, protocol="overlap")
    assert set(overlap.planted) <= {i.path for i in overlap.test}
    with pytest.raises(ValueError, match="ratio"):
        contaminate(data, 1.5)

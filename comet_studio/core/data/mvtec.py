"""Labelled layouts used for evaluation: MVTec AD and KolektorSDD2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .images import is_image_name

__all__ = ["LabelledImage", "LabelledSet", "load_mvtec", "load_kolektor", "is_mvtec_category"]


@dataclass(frozen=True)
class LabelledImage:
    path: str
    label: int  # 0 good, 1 anomalous
    defect: str  # "good" or the defect type
    mask: str | None  # ground-truth mask path, None for good images (all-zero mask)


@dataclass(frozen=True)
class LabelledSet:
    root: str
    train: tuple[str, ...]
    test: tuple[LabelledImage, ...]


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p))


def is_mvtec_category(root: str | Path) -> bool:
    root = Path(root)
    return (root / "train").is_dir() and (root / "test").is_dir()


def load_mvtec(root: str | Path) -> LabelledSet:
    """An MVTec AD category: ``train/good``, ``test/<defect>``, ``ground_truth/<defect>/<name>_mask.png``."""
    root = Path(root)
    if not is_mvtec_category(root):
        raise FileNotFoundError(f"{root} is not an MVTec AD category (expected train/ and test/ folders)")
    train = [str(p) for sub in sorted((root / "train").iterdir()) if sub.is_dir() for p in _images(sub)]
    test: list[LabelledImage] = []
    for defect_dir in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        defect = defect_dir.name
        for path in _images(defect_dir):
            if defect == "good":
                test.append(LabelledImage(str(path), 0, "good", None))
                continue
            mask = root / "ground_truth" / defect / f"{path.stem}_mask.png"
            test.append(LabelledImage(str(path), 1, defect, str(mask) if mask.exists() else None))
    if not test:
        raise FileNotFoundError(f"{root / 'test'} holds no images")
    return LabelledSet(str(root), tuple(train), tuple(test))


def load_kolektor(root: str | Path) -> LabelledSet:
    """KolektorSDD2: ``train/*.png`` + ``train/*_GT.png`` and the same for ``test/``; an image is anomalous
    when its GT mask has any defect pixel. Training images with defects are kept (that is the point)."""
    from .images import read_mask

    root = Path(root)

    def pairs(folder: Path) -> list[LabelledImage]:
        items = []
        for path in _images(folder):
            if path.stem.endswith("_GT"):
                continue
            gt = path.with_name(f"{path.stem}_GT.png")
            label = int(gt.exists() and read_mask(gt).any())
            items.append(LabelledImage(str(path), label, "defect" if label else "good", str(gt) if label else None))
        return items

    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise FileNotFoundError(f"{root} is not a KolektorSDD2 root (expected train/ and test/ folders)")
    return LabelledSet(str(root), tuple(i.path for i in pairs(train_dir)), tuple(pairs(test_dir)))

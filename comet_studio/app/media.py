"""Images the page shows, written under the runs folder's cache so the app serves nothing else."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.data.images import ImageReadError, read_image
from ..core.io.atomic import atomic_path

__all__ = ["thumbnail", "save_image", "preview"]


def _key(path: Path, size: int) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{size}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def save_image(array: np.ndarray, target: Path, *, max_side: int | None = None) -> Path:
    """Write an RGB uint8 array as PNG (atomically), shrunk to ``max_side`` when given."""
    image = Image.fromarray(array)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Unique temp names: two threads drawing the same thumbnail must not share one temp file.
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
    return target


def thumbnail(path: str | Path, cache_dir: Path, size: int = 192) -> str:
    """A cached PNG thumbnail of ``path`` (any image the core can read); rebuilt when the file changes.
    A file that cannot be read gets a grey placeholder, so one bad file never breaks a gallery."""
    path = Path(path)
    target = cache_dir / "thumbs" / f"{_key(path, size)}.png"
    if not target.exists():
        try:
            array = read_image(path)
        except ImageReadError:
            array = np.full((size, size, 3), 128, dtype=np.uint8)
        save_image(array, target, max_side=size)
    return str(target)


def preview(path: str | Path, cache_dir: Path, size: int = 512) -> str:
    """A larger cached copy of an image for the detail views."""
    return thumbnail(path, cache_dir, size)

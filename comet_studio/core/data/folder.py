"""A raw, unlabelled folder of images: the main input. Bad files are skipped with a named reason."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .images import ImageReadError, is_image_name, read_image

__all__ = ["SkippedFile", "ImageFolder", "iter_folder", "scan_folder", "name_problem", "display_path",
           "MIN_IMAGES", "NotEnoughImagesError"]

logger = logging.getLogger(__name__)
MIN_IMAGES = 8


class NotEnoughImagesError(ValueError):
    """The folder does not hold enough usable images to train on."""


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class ImageFolder:
    """The usable images of a folder (sorted paths) and the files that were skipped, each with why."""

    root: str
    paths: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]

    def __len__(self) -> int:
        return len(self.paths)


def _walk(root: Path) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for every file under root in sorted order, one folder at a time (so a huge tree is never
    listed whole), following symlinked folders once (a symlink loop is not followed twice); (folder, reason)
    for each folder that cannot be listed (os.walk would skip it silently)."""
    seen: set[str] = set()
    unreadable: list[OSError] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable.append):
        while unreadable:
            error = unreadable.pop()
            yield Path(error.filename), f"cannot list folder ({error.strerror or error})"
        real = os.path.realpath(directory)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        yield from ((Path(directory) / name, None) for name in sorted(filenames))
    for error in unreadable:
        yield Path(error.filename), f"cannot list folder ({error.strerror or error})"


def name_problem(path: Path) -> str | None:
    """Why a file name cannot be used, or None. Names that are not valid UTF-8 (e.g. Latin-1 names from an
    old share) are refused: they could not be written to the run's CSV/JSON files or shown in the app."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return f"file name is not valid UTF-8 ({os.fsencode(path.name)!r}): rename the file"
    return None


def display_path(path: str | Path) -> str:
    """``path`` as printable text: undecodable bytes of a non-UTF-8 name shown as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_mask_name(path: Path) -> bool:
    stem = path.stem.lower()
    return stem.endswith("_gt") or stem.endswith("_mask") or "ground_truth" in path.parts


def iter_folder(root: str | Path) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each image file under ``root`` and (path, reason) for each file that is not one, in
    ``scan_folder``'s order, without reading any image: the lazy listing behind streaming prediction.
    Mask files and hidden files are left out silently."""
    for path, problem in _walk(Path(root)):
        # Masks of a KolektorSDD2/MVTec layout are labels, not images to use.
        if problem is None and (_is_mask_name(path) or path.name.startswith(".")):
            continue
        if problem is None and not is_image_name(path):
            problem = f"not an image file extension ({path.suffix or 'none'})"
        yield path, problem or name_problem(path)


def scan_folder(root: str | Path, *, verify: bool = True, min_images: int = MIN_IMAGES) -> ImageFolder:
    """List the usable images under ``root`` (recursively).

    Files with an image extension that cannot be decoded, and files without one, are reported in
    ``skipped`` (and logged as a warning naming each file). Mask files (``*_mask``, ``*_GT``, anything under
    ``ground_truth``) are ignored silently. Raises ``NotEnoughImagesError`` when fewer than ``min_images``
    images are usable, and ``FileNotFoundError``/``NotADirectoryError`` for a wrong path.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root} (give the folder that holds the images)")
    paths: list[str] = []
    skipped: list[SkippedFile] = []
    for path, reason in iter_folder(root):
        if reason is not None:
            skipped.append(SkippedFile(display_path(path), reason))
            continue
        if verify:
            try:
                read_image(path)
            except ImageReadError as error:
                skipped.append(SkippedFile(display_path(path), str(error)))
                continue
        paths.append(str(path))
    for item in skipped:
        logger.warning("skipped %s: %s", item.path, item.reason)
    if len(paths) < min_images:
        raise NotEnoughImagesError(
            f"{display_path(root)} holds {len(paths)} usable image(s); at least {min_images} are needed to train"
            + (f" ({len(skipped)} file(s) skipped, e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else "")
        )
    return ImageFolder(root=str(root), paths=tuple(paths), skipped=tuple(skipped))

"""A raw, unlabelled folder of images: the main input. Bad files are skipped with a named reason."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .images import ImageReadError, is_image_name, read_image

__all__ = ["SkippedFile", "ImageFolder", "ScanBounds", "iter_folder", "scan_folder", "name_problem",
           "display_path", "system_folder", "MIN_IMAGES", "SYSTEM_FOLDERS", "UNBOUNDED", "NotEnoughImagesError",
           "ScanLimitError", "ScanStopped"]

logger = logging.getLogger(__name__)
MIN_IMAGES = 8
# Pseudo file systems: endless or blocking "files" (/proc/kcore, /dev/zero); never images.
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")
PROGRESS_EVERY = 250  # files between two progress reports
MAX_LOGGED = 50  # skipped files named one by one in the log


class NotEnoughImagesError(ValueError):
    """The folder does not hold enough usable images to train on."""


class ScanLimitError(ValueError):
    """A scan went past its bound on the number of files; the message says which bound."""


class ScanStopped(Exception):
    """The caller's stop event was set during a scan."""


@dataclass(frozen=True)
class ScanBounds:
    """Limits of one scan. The defaults bound nothing (the CLI's trusted folders); the app sets them all.

    ``max_files``: files seen (images or not) before the scan stops with ``ScanLimitError``;
    ``max_depth``: folders deeper below the root are not entered (each is reported as skipped);
    ``confine``: symbolic links that resolve outside the root are not followed, and hidden folders
    (``.git``, ``.cache``, ``.ssh``) are not entered; ``stop``: checked at every file (``ScanStopped``);
    ``progress``: called with the number of files seen so far, every ``PROGRESS_EVERY`` files."""

    max_files: int | None = None
    max_depth: int | None = None
    confine: bool = False
    stop: threading.Event | None = None
    progress: Callable[[int], None] | None = None


UNBOUNDED = ScanBounds()


def _is_under(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def system_folder(path: str | Path) -> str | None:
    """The system folder (``/proc``, ``/sys``, ``/dev``) that ``path`` resolves into, or None."""
    real = os.path.realpath(path)
    return next((s for s in SYSTEM_FOLDERS if _is_under(real, s)), None)


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


def _folder_problem(folder: Path, real_root: str, depth: int, bounds: ScanBounds) -> str | None:
    """Why the scan does not enter ``folder`` (``depth`` levels below the root), or None."""
    real = os.path.realpath(folder)
    system = system_folder(real)
    if system is not None:
        return f"system folder ({system}): never scanned"
    if bounds.confine and not _is_under(real, real_root):
        return f"symbolic link to a folder outside the scanned folder ({real}): not followed"
    if bounds.max_depth is not None and depth > bounds.max_depth:
        return f"folder more than {bounds.max_depth} levels deep: not scanned (the scan's depth bound)"
    return None


def _file_problem(path: Path, real_root: str, bounds: ScanBounds) -> str | None:
    if bounds.confine and path.is_symlink() and not _is_under(os.path.realpath(path), real_root):
        return "symbolic link to a file outside the scanned folder: not read"
    return None


def _count(seen: int, root: Path, bounds: ScanBounds) -> None:
    """One more file: enforce the file bound, report progress, honour a stop."""
    if bounds.max_files is not None and seen > bounds.max_files:
        raise ScanLimitError(f"stopped scanning {display_path(root)} after {bounds.max_files:,} files (the scan's "
                             f"bound): choose a smaller folder, e.g. one of its sub-folders")
    if bounds.stop is not None and bounds.stop.is_set():
        raise ScanStopped(f"scan of {display_path(root)} stopped after {seen:,} files")
    if bounds.progress is not None and seen % PROGRESS_EVERY == 0:
        bounds.progress(seen)


def _walk(root: Path, bounds: ScanBounds = UNBOUNDED) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for every file under root in sorted order, one folder at a time (so a huge tree is never
    listed whole), following symlinked folders once (a symlink loop is not followed twice); (path, reason)
    for each folder that cannot be listed (os.walk would skip it silently) or that ``bounds`` keep out, and
    for each file link that leads out of a confined root."""
    seen: set[str] = set()
    unreadable: list[OSError] = []
    real_root = os.path.realpath(root)
    files = 0
    for directory, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable.append):
        while unreadable:
            error = unreadable.pop()
            yield Path(error.filename), f"cannot list folder ({error.strerror or error})"
        real = os.path.realpath(directory)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        here = Path(directory)
        depth = len(here.relative_to(root).parts) + 1
        kept = []
        for name in sorted(dirnames):
            if bounds.confine and name.startswith("."):
                continue  # hidden folders are left out silently, like hidden files
            problem = _folder_problem(here / name, real_root, depth, bounds)
            if problem is None:
                kept.append(name)
            else:
                yield here / name, problem
        dirnames[:] = kept
        for name in sorted(filenames):
            files += 1
            _count(files, root, bounds)
            yield here / name, _file_problem(here / name, real_root, bounds)
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


def iter_folder(root: str | Path, bounds: ScanBounds = UNBOUNDED) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each image file under ``root`` and (path, reason) for each file that is not one, in
    ``scan_folder``'s order, without reading any image: the lazy listing behind streaming prediction.
    Mask files and hidden files are left out silently."""
    for path, problem in _walk(Path(root), bounds):
        # Masks of a KolektorSDD2/MVTec layout are labels, not images to use.
        if problem is None and (_is_mask_name(path) or path.name.startswith(".")):
            continue
        if problem is None and not is_image_name(path):
            problem = f"not an image file extension ({path.suffix or 'none'})"
        yield path, problem or name_problem(path)


def scan_folder(root: str | Path, *, verify: bool = True, min_images: int = MIN_IMAGES,
                bounds: ScanBounds = UNBOUNDED) -> ImageFolder:
    """List the usable images under ``root`` (recursively), within ``bounds`` (``ScanBounds``).

    Files with an image extension that cannot be decoded, and files without one, are reported in
    ``skipped`` (and logged as a warning naming each file). Mask files (``*_mask``, ``*_GT``, anything under
    ``ground_truth``) are ignored silently; ``/proc``, ``/sys`` and ``/dev`` are never entered. Raises
    ``NotEnoughImagesError`` when fewer than ``min_images`` images are usable, ``FileNotFoundError`` /
    ``NotADirectoryError`` for a wrong path, ``ScanLimitError`` past ``bounds.max_files`` and ``ScanStopped``
    when ``bounds.stop`` is set.
    """
    root = Path(root).expanduser()
    system = system_folder(root)
    if system is not None:
        raise ValueError(f"{display_path(root)} lies in the system folder {system}: never scanned")
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root} (give the folder that holds the images)")
    paths: list[str] = []
    skipped: list[SkippedFile] = []
    for path, reason in iter_folder(root, bounds):
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
    for item in skipped[:MAX_LOGGED]:
        logger.warning("skipped %s: %s", item.path, item.reason)
    if len(skipped) > MAX_LOGGED:  # a folder of 100,000 stray files must not flood the log
        logger.warning("... and %d more skipped file(s)", len(skipped) - MAX_LOGGED)
    if len(paths) < min_images:
        raise NotEnoughImagesError(
            f"{display_path(root)} holds {len(paths)} usable image(s); at least {min_images} are needed to train"
            + (f" ({len(skipped)} file(s) skipped, e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else "")
        )
    return ImageFolder(root=str(root), paths=tuple(paths), skipped=tuple(skipped))

"""Folder scans as the app runs them: always bounded (``AppContext.scan_bounds``), never the core's unbounded
default, so a client naming a huge tree or a network mount gets a message instead of a busy server."""

from __future__ import annotations

from pathlib import Path

from ..core.data.folder import ScanBounds, display_path, name_problem, scan_folder
from ..core.data.images import is_image_name

__all__ = ["SCAN_QUEUE", "SCAN_SLOTS", "listed_images"]

SCAN_QUEUE = "scan"  # the concurrency group of every event that walks a folder (Data tab scans, Test tab predict)
SCAN_SLOTS = 2


def listed_images(path: Path, bounds: ScanBounds) -> tuple[list[str], list[tuple[str, str]]]:
    """(image paths, skipped (path, reason)) of a folder (recursively, not decoded) or of one image file."""
    if path.is_dir():
        folder = scan_folder(path, verify=False, min_images=0, bounds=bounds)
        return list(folder.paths), [(s.path, s.reason) for s in folder.skipped]
    if not is_image_name(path):
        return [], [(display_path(path), f"not an image file extension ({path.suffix or 'none'})")]
    problem = name_problem(path)
    return ([], [(display_path(path), problem)]) if problem else ([str(path)], [])

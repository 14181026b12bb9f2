"""The images to predict: listed lazily for the CLI and Ray, or as a list for the app.

A listing is a stream of ``Listed(index, path, error)``: ``index`` counts every entry in order (it names the
heatmap files, so it is the same on every engine), ``error`` is empty for an image to score and says why not
otherwise (a file without an image extension). Nothing here holds the whole list: a folder is walked one
sub-folder at a time and a text file is read line by line. For Ray the listing is spooled to a file once
and cut into blocks that workers read by byte offset (``spool_listing``, ``read_spool_block``).

``listed_images`` (one folder or file, within scan bounds: the app's Test and Data tabs) and
``collect_images`` (files and folders, unbounded) return (paths, skipped) lists, not decoding anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from ...core.data.folder import UNBOUNDED, ScanBounds, display_path, iter_folder, name_problem, scan_folder
from ...core.data.images import is_image_name

__all__ = ["LIST_SUFFIXES", "Listed", "SpoolBlock", "check_inputs", "iter_listing", "iter_blocks", "to_columns",
           "spool_listing", "read_spool_block", "listed_images", "collect_images"]

# A text file among the inputs lists image paths, one per line (blank lines and # comments ignored).
LIST_SUFFIXES = (".txt", ".lst")


@dataclass(frozen=True)
class Listed:
    index: int
    path: str
    error: str  # "" = an image to score


@dataclass(frozen=True)
class SpoolBlock:
    """``count`` consecutive entries of a spool file, starting at entry ``start`` and byte ``offset``."""

    start: int
    offset: int
    count: int


def check_inputs(inputs: Sequence[str | Path]) -> None:
    """Fail before any work when an input does not exist (the rest is checked as it streams)."""
    if not inputs:
        raise ValueError("no inputs: give image files, folders, or text files listing image paths")
    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")


def _not_an_image(path: Path) -> str:
    return f"not an image file extension ({path.suffix or 'none'})"


def _list_file(path: Path) -> Iterator[tuple[str, str]]:
    """(path, error) per entry of a text file; relative entries are relative to the list file's folder."""
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            target = Path(entry) if os.path.isabs(entry) else path.parent / entry
            error = "" if is_image_name(target) else _not_an_image(target)
            yield str(target), error


def _entries(item: Path) -> Iterator[tuple[str, str]]:
    if item.is_dir():
        for path, reason in iter_folder(item):
            yield str(path), reason or ""
    elif item.suffix.lower() in LIST_SUFFIXES:
        yield from _list_file(item)
    elif is_image_name(item):
        yield str(item), ""
    else:
        yield str(item), f"{_not_an_image(item)}; a list of paths must end in {' or '.join(LIST_SUFFIXES)}"


def iter_listing(inputs: Sequence[str | Path]) -> Iterator[Listed]:
    """Every entry of ``inputs`` in order (folders sorted as ``scan_folder`` sorts them)."""
    check_inputs(inputs)
    index = 0
    for item in inputs:
        for path, error in _entries(Path(item)):
            yield Listed(index, path, error)
            index += 1


def iter_blocks(listing: Iterator[Listed], size: int) -> Iterator[list[Listed]]:
    if size < 1:
        raise ValueError(f"block size must be >= 1, got {size}")
    while block := list(islice(listing, size)):
        yield block


def to_columns(entries: Sequence[Listed]) -> dict[str, np.ndarray]:
    """A block of entries as the column batch every prediction stage takes."""
    return {"index": np.array([e.index for e in entries], dtype=np.int64),
            "path": np.array([e.path for e in entries], dtype=object),
            "error": np.array([e.error for e in entries], dtype=object)}


def _encode(entry: Listed) -> bytes:
    # One line per entry: "error<TAB>path". An error never holds a tab or a line break; a path with a line
    # break cannot be written on one line, so it becomes an error entry (the name is shown escaped).
    path, error = entry.path, entry.error.replace("\t", " ").replace("\n", " ")
    if "\n" in path or "\r" in path:
        path, error = path.replace("\n", "\\n").replace("\r", "\\r"), "file name holds a line break"
    return error.encode() + b"\t" + os.fsencode(path) + b"\n"


def spool_listing(inputs: Sequence[str | Path], spool: Path, block_size: int) -> list[SpoolBlock]:
    """Write the listing to ``spool`` and return its blocks: the driver keeps one small record per block,
    never the paths."""
    if block_size < 1:
        raise ValueError(f"block size must be >= 1, got {block_size}")
    blocks: list[SpoolBlock] = []
    offset = 0
    with open(spool, "wb") as handle:
        for block in iter_blocks(iter_listing(inputs), block_size):
            data = b"".join(_encode(e) for e in block)
            handle.write(data)
            blocks.append(SpoolBlock(block[0].index, offset, len(block)))
            offset += len(data)
    return blocks


def read_spool_block(spool: str | Path, block: SpoolBlock) -> list[Listed]:
    """The entries of one block, read by a worker."""
    entries = []
    with open(spool, "rb") as handle:
        handle.seek(block.offset)
        for i in range(block.count):
            error, _, path = handle.readline().rstrip(b"\n").partition(b"\t")
            entries.append(Listed(block.start + i, os.fsdecode(path), error.decode()))
    return entries


def listed_images(path: Path, bounds: ScanBounds = UNBOUNDED) -> tuple[list[str], list[tuple[str, str]]]:
    """(image paths, skipped (path, reason)) of a folder (recursively, within ``bounds``, not decoded) or of
    one image file."""
    if path.is_dir():
        folder = scan_folder(path, verify=False, min_images=0, bounds=bounds)
        return list(folder.paths), [(s.path, s.reason) for s in folder.skipped]
    if not is_image_name(path):
        return [], [(display_path(path), _not_an_image(path))]
    problem = name_problem(path)
    return ([], [(display_path(path), problem)]) if problem else ([str(path)], [])


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image paths from files and folders (folders recursively); returns (paths, skipped (path, reason))."""
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir() or (item.is_file() and is_image_name(item)):
            found, missed = listed_images(item)
            paths.extend(found)
            skipped.extend(missed)
        elif item.exists():
            skipped.append((str(item), _not_an_image(item)))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return paths, skipped

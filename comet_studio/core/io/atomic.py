"""Atomic file writes: write to a temporary file beside the target, flush it to disk, then rename.

A reader (or a crash) therefore sees either the old file or the complete new one, never half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_text_atomic", "json_text", "write_json_atomic", "write_csv_atomic"]

# The process umask, read once at import (os.umask can only be read by setting it, which is not thread-safe).
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target``, on error it is removed.

    >>> with atomic_path("model.onnx") as tmp:
    ...     write_something(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name, so two writers of the same target never share a temp file; same folder, so
    # os.replace is a rename on one file system.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp} for {target}")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())  # the data is on disk before the rename makes it visible
        # Some writers (safetensors) create their file 0600; a saved model should be as readable as any
        # other file this user writes (a shared model folder, a server that runs as another user).
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> None:
    """Replace ``target`` with ``text`` atomically (unique temp file, fsync, rename)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_text(data: Any) -> str:
    """``data`` as indented, strict JSON: NaN and infinities (a training-free memory's losses, pixel metrics
    without masks) become ``null``, which every JSON reader accepts; Python's ``NaN`` token breaks ``jq``,
    browsers' ``JSON.parse`` and most other languages' parsers."""
    return json.dumps(_finite(data), indent=2, sort_keys=False, allow_nan=False)


def write_json_atomic(target: str | Path, data: Any) -> None:
    """Replace ``target`` with ``data`` as strict JSON (``json_text``) atomically: a crash or a second writer
    never leaves half a file."""
    write_text_atomic(target, json_text(data))


def write_csv_atomic(target: str | Path, rows: Iterable[dict], fieldnames: Sequence[str], *,
                     extrasaction: str = "raise") -> None:
    """Replace ``target`` with a CSV of ``rows`` (a header, then one line a dict) atomically. The whole table is
    built in memory first, so a reader sees the old table or the new one (these tables are small)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, extrasaction=extrasaction)  # type: ignore[arg-type]
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(target, buffer.getvalue())

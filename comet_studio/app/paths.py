"""Where the app may read and write: typed user paths, run ids, uploads. Every path check lives here.

The app serves files only from the runs folder's cache (thumbnails, heatmaps and exports are written there)
and the Gradio temp folder. Paths typed by the user name folders to read images from: ``..`` components are
refused so a path means what it says, and the path, symlinks resolved, must lie under a data root
(``--data-root``; on loopback the home and current folders by default). ``/proc``, ``/sys`` and ``/dev``
are never read.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.data.folder import system_folder
from ..core.data.images import is_image_name

__all__ = ["PathError", "DataRoots", "user_path", "is_within", "new_run_id", "resolve_run", "run_ids",
           "save_uploads", "MAX_UPLOAD_BYTES"]

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
MAX_UPLOAD_BYTES = 2 * 1024**3  # unpacked size of one upload (zip bombs stop here)
MAX_UPLOAD_FILES = 50_000


class PathError(ValueError):
    """A path or run id the app refuses, with the reason."""


@dataclass(frozen=True)
class DataRoots:
    """The folders a client may name, symlinks resolved. Empty: uploads only."""

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, folders: Iterable[str | Path]) -> DataRoots:
        resolved = list(dict.fromkeys(Path(f).expanduser().resolve() for f in folders if str(f)))
        # A root inside another adds nothing; listing it would only lengthen every refusal.
        return cls(tuple(r for r in resolved if not any(r != o and r.is_relative_to(o) for o in resolved)))

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots) if self.roots else "none (uploads only)"

    def check(self, path: Path, shown: str) -> Path:
        """``path`` with symlinks resolved, when it lies under a root; else ``PathError`` naming the roots.
        Checked before the path is looked at, so a refusal says nothing about what exists outside."""
        real = path.resolve()
        system = system_folder(real)
        if system is not None:
            raise PathError(f"{shown!r} lies in the system folder {system}, which is never read; "
                            f"data roots: {self.describe()}")
        if not any(real.is_relative_to(root) for root in self.roots):
            where = "a symbolic link out of the data roots" if real != path else "outside the data roots"
            raise PathError(f"{shown!r} is {where}; folders must lie under a data root: {self.describe()} "
                            f"(the studio's --data-root option opens more)")
        return real


def user_path(text: str, *, kind: str = "folder", roots: DataRoots | None = None) -> Path:
    """A path typed by the user: quotes and spaces trimmed, ``~`` expanded, ``..`` refused, under one of
    ``roots`` when given (symlinks resolved: the resolved path is returned); must exist and be a folder
    (``kind="folder"``) or either (``kind="any"``)."""
    cleaned = (text or "").strip().strip("'\"").strip()
    if not cleaned:
        raise PathError(f"no {kind} given: type the path of a folder of images on this machine")
    path = Path(cleaned).expanduser()
    if ".." in path.parts:
        where = f" under a data root ({roots.describe()})" if roots is not None else ""
        raise PathError(f"{cleaned!r}: paths with '..' are refused; give the folder's full path{where}")
    path = path.absolute()
    if roots is not None:
        path = roots.check(path, cleaned)
    if not path.exists():
        raise PathError(f"{path} does not exist")
    if kind == "folder" and not path.is_dir():
        raise PathError(f"{path} is a file; give the folder that holds the images")
    return path


def is_within(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` (after resolving symlinks and ``..``) lies inside ``root``."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-<6 hex>``: sortable by time, unique across browser tabs started the same second."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def resolve_run(runs_dir: Path, run_id: str) -> Path:
    """The folder of run ``run_id`` (a name, not a path) inside ``runs_dir``; anything else is refused."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise PathError(f"{run_id!r} is not a run id (expected e.g. 20250101-120000-a1b2c3); pick a run "
                        f"from the list")
    path = runs_dir / run_id
    if not path.is_dir() or not is_within(path, runs_dir):
        raise PathError(f"run {run_id} not found in {runs_dir}")
    return path


def run_ids(runs_dir: Path) -> list[str]:
    """Names of the run folders under ``runs_dir``, newest first."""
    if not runs_dir.is_dir():
        return []
    return sorted((p.name for p in runs_dir.iterdir() if p.is_dir() and RUN_ID.match(p.name)), reverse=True)


def _extract_zip(archive: Path, dest: Path, budget: list[int]) -> int:
    """Extract image members of ``archive`` into ``dest``; refuses members that escape ``dest`` and stops
    at the size budget. Returns the number of images written."""
    written = 0
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > MAX_UPLOAD_FILES:
            raise PathError(f"{archive.name} holds {len(members)} files; at most {MAX_UPLOAD_FILES} are accepted")
        for member in members:
            name = Path(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise PathError(f"{archive.name}: member {member.filename!r} points outside the archive")
            if not is_image_name(name) or any(part.startswith(("__MACOSX", ".")) for part in name.parts):
                continue
            budget[0] -= member.file_size
            if budget[0] < 0:
                raise PathError(f"upload larger than {MAX_UPLOAD_BYTES // 1024**2} MB when unpacked")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            written += 1
    return written


def save_uploads(files: list[str], uploads_dir: Path) -> Path:
    """Copy uploaded images (and the images inside uploaded zips) into a new folder under ``uploads_dir``."""
    if not files:
        raise PathError("no files uploaded")
    dest = uploads_dir / new_run_id()
    dest.mkdir(parents=True)
    budget = [MAX_UPLOAD_BYTES]
    count = 0
    for item in files:
        path = Path(item)
        if path.suffix.lower() == ".zip":
            count += _extract_zip(path, dest / path.stem, budget)
        elif is_image_name(path):
            budget[0] -= path.stat().st_size
            if budget[0] < 0:
                raise PathError(f"upload larger than {MAX_UPLOAD_BYTES // 1024**2} MB")
            target = dest / path.name
            if target.exists():  # same name from two folders: keep both
                target = dest / f"{path.stem}_{count}{path.suffix}"
            shutil.copyfile(path, target)
            count += 1
    if count == 0:
        shutil.rmtree(dest, ignore_errors=True)
        raise PathError("the upload holds no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, or a .zip of them)")
    return dest

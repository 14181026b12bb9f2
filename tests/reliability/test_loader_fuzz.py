"""Bad inputs a plant's image folders really hold, through every loader: ``read_image``, ``scan_folder``, the
training scan of ``train_run``, ``collect_images`` / ``iter_predictions`` / ``predict_local``, and the app's
API. Each bad input is skipped with a named reason or refused with a clear error; none crashes or hangs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from comet_studio.core.config import BackboneConfig, ModelConfig, TrainConfig
from comet_studio.core.data import ImageReadError, read_image, scan_folder
from comet_studio.core.data.images import MAX_PIXELS
from comet_studio.core.model import AnomalyModel
from comet_studio.workflows.predict.listing import collect_images
from comet_studio.workflows.predict.pipeline import iter_predictions, predict_local
from comet_studio.workflows.run import read_samples, train_run, training_folder
from tests.conftest import TINY, good_tiles

# libtiff and Pillow warn about the corrupt files we feed them on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

N_GOOD = 9
NON_UTF8 = b"camera_\xff\xfe.png"  # a Latin-1 name from an old share: not valid UTF-8


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a named pipe opened for reading blocks until a writer comes)."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a loader hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- makers of bad and odd files -----------------------------------------------------------------------------
def _tile(k: int = 0) -> np.ndarray:
    return np.asarray(Image.open(good_tiles(1, offset=40 + k)[0]).convert("RGB"))


def _jpeg_bytes() -> bytes:
    return good_tiles(1, offset=40)[0].read_bytes()


def _png_bytes(image: Image.Image | np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, "PNG", **options)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` RGB, and no pixel data at all."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height``."""
    data = bytearray(_jpeg_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@dataclass(frozen=True)
class Bad:
    """A bad input: ``make(path)`` creates it; ``reason`` is a regex of the message it must get."""

    name: str
    make: Callable[[Path], None]
    reason: str


def _bytes(data: Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data())


BAD_FILES = [
    Bad("truncated.png", _bytes(lambda: (lambda d: d[: len(d) // 2])(_png_bytes(_tile()))), "truncated"),
    Bad("truncated.jpg", _bytes(lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2]), "truncated"),
    Bad("header_only.jpg", _bytes(lambda: _jpeg_bytes()[:200]), "truncated"),
    Bad("signature_only.png", _bytes(lambda: b"\x89PNG\r\n\x1a\n"), "not an image"),
    Bad("zero_bytes.png", _bytes(lambda: b""), "empty file"),
    Bad("text_named.png", lambda p: p.write_text("shift report: line 3 stopped at 14:02\n"), "not an image"),
    Bad("random_bytes.jpg", _bytes(lambda: np.random.default_rng(0).bytes(4096)), "not an image"),
    Bad("bomb_60000.png", _bytes(lambda: _png_header_only(60_000, 60_000)), "too large"),
    Bad("bomb_65000.jpg", _bytes(lambda: _jpeg_claiming(65_000, 65_000)), "too large"),
    # A real, decodable 100-megapixel (1-bit, 12 KB) image: refused by our limit before decoding.
    Bad("over_max_pixels.png", lambda p: Image.new("1", (10_001, MAX_PIXELS // 10_001 + 1)).save(p), "too large"),
    Bad("tiny_4x4.png", _bytes(lambda: _png_bytes(np.zeros((4, 4), np.uint8))), "too small"),
    Bad("broken_link.png", lambda p: os.symlink(p.parent / "gone.png", p), "broken symbolic link"),
    Bad("self_loop.png", lambda p: os.symlink(p.name, p), "symbolic links"),
    Bad("named_pipe.png", lambda p: os.mkfifo(p), "not a regular file"),
]
# Skipped by the folder scan before any decoding (read_image alone would accept the first).
BAD_NAMES = {NON_UTF8: "not valid UTF-8", b"notes.txt": "not an image file extension",
             b"export.csv": "not an image file extension"}


def _gray16() -> Image.Image:
    ramp = np.tile(np.linspace(1000, 4000, 64, dtype=np.uint16), (48, 1))  # 12-bit data in a 16-bit PNG
    return Image.fromarray(ramp)


def _write_cv2(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: cv2.imwrite(str(path), array)


ODD_BUT_VALID = {
    "gray16.png": lambda p: _gray16().save(p),
    "rgb16.png": _write_cv2((_tile().astype(np.uint16) * 257)[:, :, ::-1].copy()),
    "palette.png": lambda p: Image.fromarray(_tile(1)).convert("P").save(p),
    "palette_transparent.png": lambda p: Image.fromarray(_tile(2)).convert("P").save(p, transparency=0),
    "rgba.png": lambda p: Image.fromarray(_tile(3)).convert("RGBA").save(p),
    "cmyk.jpg": lambda p: Image.fromarray(_tile(4)).convert("CMYK").save(p),
    "jpeg_named.png": lambda p: p.write_bytes(_jpeg_bytes()),
    "bilevel.png": lambda p: Image.fromarray(_tile(5)).convert("1").save(p),
    "folder.png/inside.jpg": lambda p: p.write_bytes(good_tiles(1, offset=50)[0].read_bytes()),
}


@dataclass(frozen=True)
class Zoo:
    root: Path
    good: list[str]  # every path the scan must keep
    skipped: dict[str, str]  # path -> regex of its reason


def build_zoo(root: Path) -> Zoo:
    good = []
    for p in good_tiles(N_GOOD):
        shutil.copy(p, root / p.name)
        good.append(str(root / p.name))
    (root / "folder.png").mkdir()  # a folder named like an image (scanned as a folder)
    for name, make in ODD_BUT_VALID.items():
        make(root / name)
        good.append(str(root / name))
    skipped = {}
    for bad in BAD_FILES:
        bad.make(root / bad.name)
        skipped[str(root / bad.name)] = bad.reason
    for name, reason in BAD_NAMES.items():
        path = os.fsencode(root) + b"/" + name
        with open(path, "wb") as handle:
            handle.write(_jpeg_bytes())
        skipped[os.fsencode(path).decode("utf-8", "backslashreplace")] = reason
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "loop")  # a folder loop: walked once, never forever
    return Zoo(root, sorted(good), skipped)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return build_zoo(tmp_path_factory.mktemp("zoo"))


# -- read_image ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD_FILES, ids=[b.name for b in BAD_FILES])
def test_read_image_names_the_problem(zoo, bad):
    with deadline(10), pytest.raises(ImageReadError, match=bad.reason):
        read_image(zoo.root / bad.name)


def test_read_image_refuses_a_folder_named_like_an_image(zoo):
    with pytest.raises(ImageReadError, match="a folder, not an image"):
        read_image(zoo.root / "folder.png")


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_images_are_read_as_rgb(zoo, name):
    image = read_image(zoo.root / name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.std() > 0  # real content, not a blank conversion
    if name == "gray16.png":  # 12-bit data in 16 bits: scaled into 8 bits, not clipped, its ramp kept
        assert image.max() == 255 and len(np.unique(image)) > 32


def test_mutated_images_read_or_fail_cleanly(tmp_path):
    """240 seeded mutations (cut at a random byte, bytes overwritten in the header or anywhere) of a real
    JPEG, PNG, BMP and TIFF: each reads as an RGB array or raises ImageReadError, nothing else."""
    rng = np.random.default_rng(7)
    image = Image.fromarray(_tile())
    sources = {"jpg": _jpeg_bytes()}
    for fmt, ext in (("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif")):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        sources[ext] = buffer.getvalue()
    outcomes = {"read": 0, "refused": 0}
    for ext, data in sources.items():
        for k in range(60):
            mutated = bytearray(data)
            if k % 3 == 0:
                mutated = mutated[: rng.integers(1, len(mutated))]
            else:
                span = 200 if k % 3 == 1 else len(mutated)
                for position in rng.integers(0, min(span, len(mutated)), 6):
                    mutated[position] = rng.integers(0, 256)
            path = tmp_path / f"m{k}.{ext}"
            path.write_bytes(bytes(mutated))
            try:
                array = read_image(path)
            except ImageReadError:
                outcomes["refused"] += 1
            else:
                assert array.dtype == np.uint8 and array.shape[2] == 3
                outcomes["read"] += 1
    assert sum(outcomes.values()) == 240 and outcomes["refused"] > 60


# -- folder scans --------------------------------------------------------------------------------------------
def _assert_scan(zoo: Zoo, paths, skipped) -> None:
    assert sorted(paths) == zoo.good
    reasons = dict(skipped)
    assert sorted(reasons) == sorted(zoo.skipped)
    for path, pattern in zoo.skipped.items():
        assert re.search(pattern, reasons[path]), (path, reasons[path])


def test_scan_folder_keeps_the_good_and_names_each_skip(zoo):
    with deadline(30):
        folder = scan_folder(zoo.root)
    _assert_scan(zoo, folder.paths, [(s.path, s.reason) for s in folder.skipped])
    assert training_folder(zoo.root) == folder  # the scan behind train_run and the app's Train button


def test_collect_images_lists_without_decoding_and_refuses_bad_names(zoo):
    with deadline(30):
        paths, skipped = collect_images([zoo.root])
    # No decoding here: files whose content is bad are listed, and iter_predictions reports them.
    undecoded = {p for p in zoo.skipped if Path(p).name in {b.name for b in BAD_FILES}}
    assert sorted(paths) == sorted(zoo.good + list(undecoded))
    assert {p for p, _ in skipped} == set(zoo.skipped) - undecoded
    explicit = os.fsdecode(os.fsencode(zoo.root) + b"/" + NON_UTF8)
    assert collect_images([explicit])[0] == []  # named one by one, it is refused too
    with pytest.raises(FileNotFoundError, match="no such file"):
        collect_images([zoo.root / "not_there.png"])


@pytest.fixture(scope="module")
def zoo_run(zoo, tmp_path_factory):
    run = train_run(zoo.root, tmp_path_factory.mktemp("zoo-run"), ModelConfig(backbone=BackboneConfig(
        image_size=TINY)), TrainConfig(rounds=1, steps_per_round=2, device="cpu"))
    return run


def test_train_run_trains_on_the_good_and_lists_the_rest(zoo, zoo_run):
    assert not zoo_run.stopped and len(zoo_run.folder) == len(zoo.good)
    with open(zoo_run.run_dir / "skipped.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    _assert_scan(zoo, [r["path"] for r in read_samples(zoo_run.run_dir)], [(r["path"], r["reason"]) for r in rows])
    assert json.loads((zoo_run.run_dir / "run.json").read_text())["n_skipped"] == len(zoo.skipped)


def test_prediction_reports_each_bad_file_and_scores_the_rest(zoo, zoo_run, tmp_path):
    model = AnomalyModel.load(zoo_run.run_dir, device="cpu")
    paths, _ = collect_images([zoo.root])
    paths.append(str(zoo.root / "folder.png"))  # a folder given where an image is expected
    scored, unreadable = [], {}
    with deadline(60):
        for good, prediction, bad, _ in iter_predictions(model, paths, chunk=8):
            scored += good
            assert prediction is None or np.isfinite(prediction.image_score).all()
            unreadable.update(bad)
    assert sorted(scored) == zoo.good
    assert "a folder" in unreadable.pop(str(zoo.root / "folder.png"))
    for path, reason in unreadable.items():
        assert re.search(zoo.skipped[path], reason), (path, reason)
    # The CLI's writer, given the folder: a row per file it lists, an error in the row of each bad one.
    summary = predict_local(model, [zoo.root], tmp_path / "pred", heatmaps=True, batch_size=8)
    with open(summary.table, newline="", errors="surrogateescape") as handle:  # raw bytes of odd names
        rows = list(csv.DictReader(handle))
    assert sorted(r["path"] for r in rows if not r["error"]) == zoo.good
    assert summary.scored == len(zoo.good) and summary.failed == len(rows) - len(zoo.good) > 0
    assert len(list((tmp_path / "pred" / "heatmaps").glob("*.png"))) == len(zoo.good)


# -- permissions ---------------------------------------------------------------------------------------------
def _scan_as(uid: int | None, root: Path) -> dict:
    """scan_folder(root) as ``uid`` (a forked child drops root privileges: root reads chmod-000 files)."""
    if uid is None:
        folder = scan_folder(root)
        return {"paths": list(folder.paths), "skipped": {s.path: s.reason for s in folder.skipped}}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, scan, report as JSON, exit without cleanup
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            folder = scan_folder(root)
            answer = {"paths": list(folder.paths), "skipped": {s.path: s.reason for s in folder.skipped}}
            os.write(write_end, json.dumps(answer).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        data = handle.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged scan failed"
    return json.loads(data)


def test_unreadable_files_and_folders_are_skipped_with_a_reason():
    root = Path(tempfile.mkdtemp(prefix="comet-perm-"))  # under /tmp: reachable by an unprivileged user
    try:
        os.chmod(root, 0o755)
        for p in good_tiles(8):
            shutil.copy(p, root / p.name)
            os.chmod(root / p.name, 0o644)
        locked_file = root / "locked.png"
        locked_file.write_bytes(_jpeg_bytes())
        locked_dir = root / "locked_dir"
        locked_dir.mkdir()
        (locked_dir / "hidden.jpg").write_bytes(_jpeg_bytes())
        os.chmod(locked_file, 0)
        os.chmod(locked_dir, 0)
        answer = _scan_as(65534 if os.geteuid() == 0 else None, root)  # 65534: "nobody"
        assert len(answer["paths"]) == 8
        assert answer["skipped"] == {str(locked_file): "permission denied",
                                     str(locked_dir): "cannot list folder (Permission denied)"}
        if os.geteuid() == 0:  # root itself reads both: chmod does not stop it, and that is not an error
            assert len(scan_folder(root).paths) == 10
    finally:
        os.chmod(root / "locked_dir", 0o755)
        shutil.rmtree(root)


# -- the app -------------------------------------------------------------------------------------------------
def test_app_trains_and_predicts_on_the_zoo(client, studio):
    from tests.app.conftest import train

    root = studio.data_root / "zoo"  # the app reads only under its data roots
    root.mkdir(exist_ok=True)
    zoo = build_zoo(root)
    status = train(client, zoo.root, rounds=1, steps_per_round=2)
    assert status["status"] == "done", status["error"]
    assert status["info"]["n_images"] == len(zoo.good) and status["info"]["n_skipped"] == len(zoo.skipped)
    _, gallery, summary, table, _ = client.predict(status["run_id"], [], str(zoo.root), 0.5, api_name="/predict")
    verdicts = {row[0]: row[2] for row in table["data"]}
    assert len(gallery) == len(zoo.good)
    for bad in BAD_FILES:
        assert verdicts[bad.name].startswith("unreadable") and len(verdicts[bad.name]) > len("unreadable: ")
    assert f"{len(zoo.good)} images scored" in summary

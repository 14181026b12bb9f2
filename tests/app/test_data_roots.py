"""Folders a client names must lie under a data root (symlinks resolved, /proc never), and every scan is
bounded: a file count and depth with a message, progress, Stop, and its own queue slots."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from comet_studio.app import main as app_main
from comet_studio.app.context import SCAN_FILES
from comet_studio.app.paths import DataRoots, PathError, user_path
from comet_studio.app.tabs import data as data_tab
from comet_studio.core.data.folder import ScanBounds, ScanLimitError, scan_folder
from tests.app.conftest import train, wait_for_job
from tests.conftest import TINY, good_tiles

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
BIG = 100_000  # empty files in the big folder


@pytest.fixture(scope="module")
def run_id(client, studio) -> str:
    status = train(client, studio.folder, rounds=1, steps_per_round=2)
    assert status["status"] == "done", status["error"]
    return status["run_id"]


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder beside the data root (not under it) with an image nobody chose to share."""
    folder = tmp_path_factory.mktemp("outside")
    for p in good_tiles(8, offset=40):
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture(scope="module")
def links(studio, outside) -> dict[str, Path]:
    """Symbolic links inside the data root: out of it (to a folder, to /proc, to a system folder of
    images), and one that stays inside."""
    root = studio.data_root / "links"
    root.mkdir(exist_ok=True)
    targets = {"to-outside": outside, "to-proc": Path("/proc"), "to-usr-share": Path("/usr/share"),
               "to-tiles": studio.folder}
    for name, target in targets.items():
        if not (root / name).is_symlink():
            os.symlink(target, root / name)
    return {name: root / name for name in targets}


@pytest.fixture(scope="module")
def big(studio) -> Path:
    """A folder of 100,000 empty files under the data root."""
    folder = studio.data_root / "big"
    if not folder.exists():
        folder.mkdir()
        for k in range(BIG):
            (folder / f"{k:06d}.png").touch()
    return folder


def _refusals(studio, outside: Path, links: dict[str, Path]) -> list[str]:
    return ["/usr/share", "/root", "/etc", "/", str(outside), str(outside / next(iter(os.listdir(outside)))),
            "/proc", "/proc/self/root", "/sys", "/dev", f"{studio.folder}/../../{outside.name}",
            f"{studio.data_root}/..", "../..", str(links["to-outside"]), str(links["to-proc"]),
            str(links["to-usr-share"]), str(links["to-outside"] / "sub")]


def test_the_api_refuses_folders_outside_the_data_roots(client, studio, run_id, outside, links):
    """/scan_folder, /start_training and /predict, each given absolute paths out of the roots, '..',
    symlinks pointing out, and /proc: refused with a message naming the data roots, nothing read."""
    attempts = 0
    started = time.perf_counter()
    for bad in _refusals(studio, outside, links):
        calls = [((bad,), "/scan_folder"), ((bad,), "/start_training"), ((run_id, [], bad, 0.5), "/predict")]
        for args, api_name in calls:
            kwargs = {"image_size": TINY} if api_name == "/start_training" else {}
            with pytest.raises(AppError, match="data root") as refused:
                client.predict(*args, api_name=api_name, **kwargs)
            assert str(studio.data_root) in str(refused.value), (api_name, bad)  # the roots are named
            attempts += 1
    print(f"{attempts} attempts to read outside the data roots refused in {time.perf_counter() - started:.1f} s")
    # A link that stays inside the roots is followed.
    assert client.predict(str(links["to-tiles"]), api_name="/scan_folder")["n_images"] == 12
    roots = client.predict(api_name="/data_roots")
    assert str(studio.data_root) in roots["roots"] and roots["max_files"] == SCAN_FILES


def test_a_scan_does_not_follow_links_out_of_its_folder(client, studio, outside):
    """A chosen folder (under a root) holding links out: its own images only, each link skipped with why."""
    mixed = studio.data_root / "mixed"
    mixed.mkdir(exist_ok=True)
    for p in good_tiles(8):
        shutil.copy(p, mixed / p.name)
    for name, target in (("escape", outside), ("proc", Path("/proc")), ("leak.png", outside / "x.jpg"),
                         ("hostname.png", Path("/etc/hostname"))):
        if not (mixed / name).is_symlink():
            os.symlink(target, mixed / name)
    (mixed / ".hidden").mkdir(exist_ok=True)
    shutil.copy(good_tiles(1, offset=50)[0], mixed / ".hidden" / "secret.jpg")
    report = client.predict(str(mixed), api_name="/scan_folder")
    assert (report["n_images"], report["n_skipped"], report["error"]) == (8, 4, None)
    folder = scan_folder(mixed, bounds=ScanBounds(confine=True))
    reasons = {Path(s.path).name: s.reason for s in folder.skipped}
    assert "outside the scanned folder" in reasons["escape"] and "system folder" in reasons["proc"]
    assert "outside the scanned folder" in reasons["hostname.png"]
    assert not any(".hidden" in p or str(outside) in p for p in folder.paths)


def test_a_folder_of_100000_empty_files_stops_at_the_bound(client, studio, run_id, big):
    """The Data tab's scan, a training and a prediction on it each end at the file bound with the message."""
    started = time.perf_counter()
    report = client.predict(str(big), api_name="/scan_folder")
    seconds = time.perf_counter() - started
    assert report["n_images"] == 0 and f"after {SCAN_FILES:,} files" in report["error"]
    print(f"scan of {BIG:,} empty files stopped at {SCAN_FILES:,} in {seconds:.2f} s "
          f"({SCAN_FILES / seconds:,.0f} files/s through the API)")
    assert seconds < 60
    job = client.predict(str(big), image_size=TINY, api_name="/start_training")
    status = wait_for_job(client, job["job_id"])
    assert status["status"] == "failed" and f"after {SCAN_FILES:,} files" in status["error"]
    with pytest.raises(AppError, match=f"after {SCAN_FILES:,} files"):
        client.predict(run_id, [], str(big), 0.5, api_name="/predict")
    started = time.perf_counter()
    unbounded = scan_folder(big, min_images=0)
    seconds = time.perf_counter() - started
    assert len(unbounded.skipped) == BIG
    print(f"core scan of all {BIG:,} (no bound): {seconds:.2f} s ({BIG / seconds:,.0f} files/s)")


def test_a_deep_tree_is_cut_at_the_depth_bound(client, studio):
    deep = studio.data_root / "deep"
    leaf = deep.joinpath(*[f"d{k}" for k in range(20)])
    leaf.mkdir(parents=True, exist_ok=True)
    for p in good_tiles(8):
        shutil.copy(p, deep / p.name)
    shutil.copy(good_tiles(1, offset=30)[0], leaf / "bottom.jpg")
    report = client.predict(str(deep), api_name="/scan_folder")
    assert (report["n_images"], report["n_skipped"]) == (8, 1)
    folder = scan_folder(deep, bounds=ScanBounds(max_depth=16))
    (skipped,) = folder.skipped
    assert "more than 16 levels deep" in skipped.reason


def test_a_scan_can_be_stopped(studio, big):
    client = Client(studio.url, verbose=False)
    job = client.submit(str(big), api_name="/scan_folder")
    stopped = False
    while not stopped and not job.done():
        stopped = client.predict(api_name="/stop_scan")["stopped"]
        time.sleep(0.02)
    report = job.result()
    assert stopped, "the scan ended before Stop reached it"
    assert "stopped after" in report["error"]


def test_two_scans_do_not_block_a_third_client(studio, run_id, monkeypatch):
    """Two clients' scans hold both scan slots; a third client's page and its other calls still answer."""
    inside, release = threading.Semaphore(0), threading.Event()
    real = data_tab.training_folder

    def held(path, bounds):
        if path.name == "tiles-held":
            inside.release()
            release.wait(60)
        return real(path, bounds)

    monkeypatch.setattr(data_tab, "training_folder", held)
    held_folder = studio.data_root / "tiles-held"
    shutil.copytree(studio.folder, held_folder, dirs_exist_ok=True)
    scans = [Client(studio.url, verbose=False).submit(str(held_folder), api_name="/scan_folder") for _ in range(2)]
    try:
        for _ in scans:
            assert inside.acquire(timeout=30), "both scans should be running"
        third = Client(studio.url, verbose=False)
        started = time.perf_counter()
        assert httpx.get(studio.url, timeout=10).status_code == 200
        archive, _ = third.predict(run_id, api_name="/export_run")  # a call in the default queue
        assert Path(archive).exists() and time.perf_counter() - started < 20
        assert not any(job.done() for job in scans)
    finally:
        release.set()
    assert all(job.result(timeout=60)["n_images"] == 12 for job in scans)


def test_typed_paths_are_confined(tmp_path):
    inside, out = tmp_path / "data" / "cells", tmp_path / "private"
    inside.mkdir(parents=True)
    out.mkdir()
    roots = DataRoots.of([tmp_path / "data"])
    assert user_path(str(inside), roots=roots) == inside.resolve()
    os.symlink(out, inside / "link")
    for bad in (str(out), str(inside / "link"), "/proc/self", "/usr/share", str(out / "missing")):
        with pytest.raises(PathError, match="data root"):
            user_path(bad, roots=roots)
    with pytest.raises(PathError, match="data root.*'\\.\\.'|'\\.\\.'.*data root"):
        user_path(f"{inside}/../../private", roots=roots)
    with pytest.raises(PathError, match=r"uploads only"):
        user_path(str(inside), roots=DataRoots.of([]))
    with pytest.raises(ScanLimitError, match="after 3 files"):
        for p in good_tiles(5):
            shutil.copy(p, inside / p.name)
        scan_folder(inside, bounds=ScanBounds(max_files=3))


def test_the_default_roots_and_the_startup_line(monkeypatch, caplog, tmp_path):
    assert app_main.default_data_roots("127.0.0.1") == [Path.home(), Path.cwd()]
    assert app_main.default_data_roots("0.0.0.0") == []
    built = []

    class Page:
        def launch(self, **kwargs):
            return kwargs

    monkeypatch.setattr(app_main, "build_app", lambda runs_dir, **kw: built.append(kw) or Page())
    with caplog.at_level(logging.INFO, logger=app_main.__name__):
        app_main.launch_app(tmp_path, host="0.0.0.0", auth=[("a", "1"), ("b", "2")], admins=["b"])
        assert built[-1]["data_roots"] == [] and built[-1]["users"] == ["a", "b"]
        assert "data roots open to clients: none (uploads only)" in caplog.text
        app_main.launch_app(tmp_path, host="127.0.0.1", data_roots=[tmp_path])
        assert f"data roots open to clients: {tmp_path.resolve()}" in caplog.text

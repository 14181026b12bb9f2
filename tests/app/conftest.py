"""A launched studio on 127.0.0.1 (free port) with a tiny real folder, shared by the app tests. Its data roots
are a "data" folder holding that folder, the tiny MVTec category and the magnetic-tile data: nothing else of
the machine (the temp folders beside them included) is readable through it."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MAGNETIC, TINY, good_tiles


@dataclass(frozen=True)
class Studio:
    url: str
    runs_dir: Path
    folder: Path
    data_root: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def launched_studio(tmp_path_factory, name: str, n_tiles: int, extra_roots: Sequence[Path] = (), *,
                    auth: list[tuple[str, str]] | None = None, **options) -> Iterator[Studio]:
    """A studio on a free port whose data root ``<name>data`` holds ``tiles/`` (``n_tiles`` good tiles), runs
    in ``<name>runs``; ``extra_roots`` are also readable, ``auth`` the logins, ``options`` go to build_app."""
    from comet_studio.app import build_app, launch_options

    data_root = tmp_path_factory.mktemp(f"{name}data")
    folder = data_root / "tiles"
    folder.mkdir()
    for p in good_tiles(n_tiles):
        shutil.copy(p, folder / p.name)
    runs_dir = tmp_path_factory.mktemp(f"{name}runs")
    app = build_app(runs_dir, default_folder=str(folder), data_roots=[data_root, *extra_roots], **options)
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                           quiet=True, auth=auth, **launch_options(runs_dir))
    try:
        yield Studio(url=url, runs_dir=runs_dir, folder=folder, data_root=data_root)
    finally:
        app.close()


@pytest.fixture(scope="session")
def studio(tmp_path_factory, tiny_mvtec) -> Iterator[Studio]:
    with launched_studio(tmp_path_factory, "", 12, [tiny_mvtec, MAGNETIC]) as launched:
        yield launched


@pytest.fixture(scope="session")
def client(studio: Studio):
    from gradio_client import Client

    return Client(studio.url, verbose=False)


def wait_for_job(client, job_id: str, timeout: float = 120.0) -> dict:
    """Poll /job_status (an API client has no browser timer) until the job leaves 'running'."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict(job_id, api_name="/job_status")
        if status["status"] != "running":
            return status
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} still running after {timeout} s")


def train(client, folder: Path, **options) -> dict:
    """Start a tiny training through the API and wait for it; returns the final status. SimpleNet unless
    ``detector`` says otherwise: these tests drive rounds, stops and loss landscapes, which a trained head has."""
    settings = {"detector": "simplenet", "image_size": TINY, "rounds": 2, "steps_per_round": 3, **options}
    started = client.predict(str(folder), api_name="/start_training", **settings)
    status = wait_for_job(client, started["job_id"])
    assert status["run_id"] == started["run_id"]
    return status

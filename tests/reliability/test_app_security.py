"""The studio as a plant would run it: bound to this machine unless asked, a password when shared, no file
outside the data roots and the runs folder readable through any endpoint, uploads capped, and four
clients training and predicting at once, each in its own run folder."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from comet_studio.app import build_app, launch_options
from comet_studio.app import main as app_main
from comet_studio.app import paths as app_paths
from tests.app.conftest import _free_port, train, wait_for_job
from tests.conftest import MAGNETIC, TINY, good_tiles

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

SECRET = "do not serve: plant recipe"
LOGIN = ("inspector", "correct horse battery")


def _other_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


# -- where it listens ----------------------------------------------------------------------------------------
def test_launch_defaults_to_this_machine_only(monkeypatch, caplog):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import launch

    calls = []
    monkeypatch.setattr("comet_studio.app.launch_app", lambda runs_dir, **kw: calls.append(kw))
    launch.main([])
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["auth"] is None
    with caplog.at_level(logging.WARNING, logger="launch"):
        launch.main(["--host", "0.0.0.0"])
    assert "without a password" in caplog.text
    assert "without --data-root" in caplog.text and calls[-1]["data_roots"] is None  # uploads only
    launch.main(["--host", "0.0.0.0", "--share-auth", "inspector:pw"])
    assert (calls[-1]["host"], calls[-1]["auth"]) == ("0.0.0.0", [("inspector", "pw")])
    launch.main(["--share-auth", "a:1", "--share-auth", "b:2", "--admin", "b", "--data-root", str(Path.cwd())])
    assert (calls[-1]["auth"], calls[-1]["admins"], calls[-1]["data_roots"]) == \
        ([("a", "1"), ("b", "2")], ["b"], [str(Path.cwd())])
    for bad in (["--share-auth", "no-colon"], ["--share-auth", "a:1", "--admin", "b"],
                ["--data-root", "/no/such/folder"], ["--share-auth", "a:1", "--share-auth", "a:2"]):
        with pytest.raises(SystemExit):
            launch.main(bad)


def test_launch_app_listens_on_loopback_only(monkeypatch, tmp_path):
    # The server's binding is what matters here; a one-endpoint page stands in for the studio.
    with gr.Blocks() as page:
        gr.Markdown("probe")
    monkeypatch.setattr(app_main, "build_app", lambda runs_dir, **kw: page)
    port = _free_port()
    app, (_, url, _) = app_main.launch_app(tmp_path, port=port, prevent_thread_lock=True, quiet=True)
    try:
        assert app.server_name == "127.0.0.1" and httpx.get(url, timeout=10).status_code == 200
        other = _other_address()
        if other is not None:  # the machine's network address does not reach the app
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{other}:{port}/", timeout=3)
    finally:
        app.close()


# -- a shared studio: password and upload cap ------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A studio launched as when shared: a login, and a 64 KB upload cap (the default is MAX_UPLOAD)."""
    folder = tmp_path_factory.mktemp("guarded-tiles")
    for p in good_tiles(8):
        shutil.copy(p, folder / p.name)
    runs_dir = tmp_path_factory.mktemp("guarded-runs")
    app = build_app(runs_dir, default_folder=str(folder))
    options = {**launch_options(runs_dir), "max_file_size": "64kb"}
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                           auth=LOGIN, **options)
    yield url
    app.close()


def test_a_password_guards_every_route(guarded):
    for method, route in (("GET", "config"), ("GET", "gradio_api/info"), ("POST", "gradio_api/call/list_runs"),
                          ("POST", "gradio_api/upload"), ("GET", f"gradio_api/file={quote('/etc/hostname')}")):
        response = httpx.request(method, guarded + route, timeout=10, **({"json": {"data": []}}
                                                                          if method == "POST" else {}))
        assert response.status_code == 401, (route, response.status_code)
    with pytest.raises(Exception, match="credentials were not provided|login"):
        Client(guarded, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(guarded, auth=(LOGIN[0], "wrong"), verbose=False)
    assert Client(guarded, auth=LOGIN, verbose=False).predict(api_name="/list_runs") == []


def test_uploads_are_capped(guarded, tmp_path, monkeypatch):
    assert launch_options(tmp_path)["max_file_size"] == app_main.MAX_UPLOAD  # what a real launch uses
    session = httpx.Client(timeout=10)
    assert session.post(guarded + "login", data=dict(zip(("username", "password"), LOGIN))).status_code == 200
    tile = good_tiles(1)[0].read_bytes()
    assert len(tile) < 64 * 1024
    assert session.post(guarded + "gradio_api/upload", files={"files": ("tile.jpg", tile)}).status_code == 200
    refused = session.post(guarded + "gradio_api/upload", files={"files": ("big.png", b"\0" * 100_000)})
    assert refused.status_code == 413 and "maximum allowed size" in refused.text
    # A small zip that unpacks beyond the cap (a zip bomb) stops with a message, leaving nothing behind.
    monkeypatch.setattr(app_paths, "MAX_UPLOAD_BYTES", 200_000)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k in range(4):
            zf.writestr(f"frame_{k}.png", b"\0" * 100_000)
    assert archive.stat().st_size < 10_000
    with pytest.raises(app_paths.PathError, match="upload larger than"):
        app_paths.save_uploads([str(archive)], tmp_path / "uploads")


# -- no path escapes -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A folder outside the runs folder holding a text file and an image nobody chose to share."""
    folder = tmp_path_factory.mktemp("secret")
    (folder / "recipe.txt").write_text(SECRET)
    shutil.copy(good_tiles(1, offset=60)[0], folder / "private.jpg")
    return folder


@pytest.fixture(scope="module")
def run_id(client, studio) -> str:
    status = train(client, studio.folder, rounds=1, steps_per_round=2)
    assert status["status"] == "done", status["error"]
    return status["run_id"]


def _escapes(studio, secret: Path) -> tuple[list[str], list[str]]:
    """The secret reached by '..' (from the runs folder, from the chosen folder) and by absolute path."""
    up = f"{studio.runs_dir}/../{secret.name}"
    dotdot = [up, f"{up}/recipe.txt", f"{studio.folder}/../{secret.name}/private.jpg", "../../etc/passwd"]
    absolute = [str(secret), str(secret / "recipe.txt"), str(secret / "private.jpg"), "/etc/passwd"]
    return dotdot, absolute


def test_no_endpoint_reads_outside_the_chosen_folders(client, studio, secret, run_id):
    """Every endpoint that takes a path, a run id or a job id, given each escape: a specific refusal and
    never the secret. A folder outside the data roots is refused even when typed on purpose; in a folder
    under a data root only its images are ever read."""
    dotdot, absolute = _escapes(studio, secret)
    attempts = []
    for bad in dotdot + absolute:
        attempts += [
            ("/start_training", (str(studio.folder),), {"overrides_from": bad}, "not a run id"),
            ("/run_samples", (bad,), {}, "not a run id"),
            ("/set_override", (run_id, bad, "good"), {}, "is not a training image"),
            ("/set_override", (bad, bad, "exclude"), {}, "not a run id"),
            ("/export_run", (bad,), {}, "not a run id"),
            ("/start_landscape", (bad,), {}, "not a run id"),
            ("/start_landscape", (run_id, bad), {}, "not a run id"),
            ("/predict", (bad, [], str(studio.folder), 0.5), {}, "not a run id"),
            ("/job_status", (bad,), {}, "no job with id"),
            ("/stop_job", (bad,), {}, "no job with id"),
        ]
    for bad in dotdot:
        attempts += [("/start_training", (bad,), {"image_size": TINY}, "paths with '..' are refused"),
                     ("/predict", (run_id, [], bad, 0.5), {}, "paths with '..' are refused")]
    for bad in absolute:
        attempts += [("/start_training", (bad,), {"image_size": TINY}, "outside the data roots"),
                     ("/predict", (run_id, [], bad, 0.5), {}, "outside the data roots")]
    for api_name, args, kwargs, expected in attempts:
        with pytest.raises(AppError, match=expected) as refused:
            client.predict(*args, api_name=api_name, **kwargs)
        assert SECRET not in str(refused.value), (api_name, args)
    for bad in dotdot + absolute:
        response = httpx.get(f"{studio.url.rstrip('/')}/gradio_api/file={quote(bad)}", timeout=10)
        assert response.status_code in (400, 403, 404) and SECRET not in response.text, bad
    print(f"{len(attempts) + len(dotdot + absolute)} escape attempts refused")
    # A folder under a data root: its image is scored, the text file beside it is never read.
    chosen = studio.data_root / "chosen"
    shutil.copytree(secret, chosen, dirs_exist_ok=True)
    _, gallery, summary, table, _ = client.predict(run_id, [], str(chosen), 0.5, api_name="/predict")
    assert [row[0] for row in table["data"]] == ["private.jpg"] and SECRET not in json.dumps(table)
    assert "1 non-image files skipped" in summary


def test_a_server_path_posing_as_an_upload_is_refused(studio, secret, run_id):
    """A client that sends a FileData naming a file on the server, instead of uploading it."""
    base = studio.url.rstrip("/")
    for path in (str(secret / "private.jpg"), str(secret / "recipe.txt"), "/etc/passwd"):
        payload = {"data": [run_id, [{"path": path, "meta": {"_type": "gradio.FileData"}}], "", 0.5]}
        event = httpx.post(f"{base}/gradio_api/call/predict", json=payload, timeout=10)
        assert event.status_code == 200
        stream = httpx.get(f"{base}/gradio_api/call/predict/{event.json()['event_id']}", timeout=60).text
        assert "event: error" in stream and "heatmap" not in stream and SECRET not in stream, stream[:500]


# -- load ----------------------------------------------------------------------------------------------------
def test_four_clients_train_and_predict_at_once(studio):
    """Four gradio_client clients on 127.0.0.1, each training (64 px, 1-2 rounds) and then predicting,
    all at the same time: every one finishes, with its own run folder and its own settings."""
    image = sorted((MAGNETIC / "test" / "good").glob("*.jpg"))[0]

    def session(k: int) -> dict:
        client = Client(studio.url, verbose=False)
        started = client.predict(str(studio.folder), detector="simplenet", image_size=TINY, rounds=1 + k % 2,
                                 steps_per_round=2, seed=100 + k, iqr_k=1.0 + k, api_name="/start_training")
        status = wait_for_job(client, started["job_id"], timeout=240)
        _, _, summary, table, _ = client.predict(status["run_id"], [], str(image), 0.5, api_name="/predict")
        return {"k": k, "status": status, "summary": summary, "rows": table["data"]}

    stdout = sys.stdout
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(session, range(4), timeout=300))
    # Concurrent trainings once left the process's stdout redirected into a StringIO for good.
    assert sys.stdout is stdout, f"sys.stdout is now {sys.stdout!r}"
    print(f"4 clients trained and predicted in {time.perf_counter() - started:.1f} s")
    assert len({r["status"]["run_id"] for r in results}) == 4
    for r in results:
        assert r["status"]["status"] == "done", r["status"]["error"]
        assert len(r["status"]["history"]) == 1 + r["k"] % 2
        run = json.loads((studio.runs_dir / r["status"]["run_id"] / "run.json").read_text())
        assert (run["train"]["seed"], run["train"]["comet"]["iqr_k"]) == (100 + r["k"], 1.0 + r["k"])
        assert "1 images scored" in r["summary"] and r["rows"][0][0] == image.name

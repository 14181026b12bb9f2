"""A studio shared by several logins: each user sees and changes only their own runs, jobs and uploads; another
user's run id or job id is refused like an unknown one; an admin sees every run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.app.conftest import launched_studio, train, wait_for_job
from tests.conftest import TINY, good_tiles

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
LOGINS = [("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw")]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """(url, runs folder, data folder): three logins, carol the admin."""
    with launched_studio(tmp_path_factory, "shared-", 10, users=[u for u, _ in LOGINS], admins=["carol"],
                         auth=LOGINS) as launched:
        yield launched.url, launched.runs_dir, launched.folder


@pytest.fixture(scope="module")
def clients(shared) -> dict[str, Client]:
    url = shared[0]
    return {user: Client(url, auth=(user, password), verbose=False) for user, password in LOGINS}


@pytest.fixture(scope="module")
def alices(clients, shared) -> dict:
    """Alice's finished run, with one override."""
    status = train(clients["alice"], shared[2], rounds=1, steps_per_round=2)
    assert status["status"] == "done", status["error"]
    rows = clients["alice"].predict(status["run_id"], api_name="/run_samples")
    clients["alice"].predict(status["run_id"], rows[0]["image"], "exclude", api_name="/set_override")
    return {**status, "image": rows[0]["image"], "other": rows[1]["image"]}


def test_users_cannot_read_or_override_each_others_runs(clients, shared, alices):
    alice, bob = clients["alice"], clients["bob"]
    run_id, job_id = alices["run_id"], alices["job_id"]
    overrides = Path(shared[1]) / run_id / "overrides.json"
    before = overrides.read_text()
    assert [r["run_id"] for r in bob.predict(api_name="/list_runs")] == []
    refusals = [
        ((run_id,), "/run_samples", "not found"),
        ((run_id, alices["image"], "auto"), "/set_override", "not found"),
        ((run_id, alices["other"], "good"), "/set_override", "not found"),
        ((run_id,), "/export_run", "not found"),
        ((run_id,), "/start_landscape", "not found"),
        ((run_id, [], str(shared[2]), 0.5), "/predict", "not found"),
        ((str(shared[2]),), "/start_training", "not found"),  # with overrides_from=run_id below
        ((job_id,), "/job_status", "no job with id"),
        ((job_id,), "/stop_job", "no job with id"),
        ((), "/job_status", "no training job"),  # "the latest job" is Bob's latest, and he has none
    ]
    for args, api_name, expected in refusals:
        kwargs = {"overrides_from": run_id, "image_size": TINY} if api_name == "/start_training" else {}
        with pytest.raises(AppError, match=expected) as refused:
            bob.predict(*args, api_name=api_name, **kwargs)
        assert alices["image"] not in str(refused.value), api_name
    # The refusal reads exactly like an unknown run's.
    with pytest.raises(AppError) as unknown:
        bob.predict("20200101-000000-abcdef", api_name="/run_samples")
    with pytest.raises(AppError) as others:
        bob.predict(run_id, api_name="/run_samples")
    assert str(others.value).replace(run_id, "ID") == str(unknown.value).replace("20200101-000000-abcdef", "ID")
    assert overrides.read_text() == before
    assert {r["image"]: r["override"] for r in alice.predict(run_id, api_name="/run_samples")}[alices["image"]] \
        == "exclude"
    print(f"{len(refusals) + 1} of Bob's attempts on Alice's run and job refused")


def test_each_user_sees_their_own_runs_and_the_admin_sees_all(clients, shared, alices):
    bob_run = train(clients["bob"], shared[2], rounds=1, steps_per_round=2)
    assert bob_run["status"] == "done", bob_run["error"]
    listed = {user: {r["run_id"] for r in client.predict(api_name="/list_runs")} for user, client in clients.items()}
    assert listed == {"alice": {alices["run_id"]}, "bob": {bob_run["run_id"]},
                      "carol": {alices["run_id"], bob_run["run_id"]}}
    with pytest.raises(AppError, match="not found"):
        clients["alice"].predict(bob_run["run_id"], api_name="/run_samples")
    assert len(clients["carol"].predict(alices["run_id"], api_name="/run_samples")) == 10
    assert clients["carol"].predict(alices["job_id"], api_name="/job_status")["status"] == "done"
    owner = json.loads((Path(shared[1]) / bob_run["run_id"] / "owner.json").read_text())
    assert owner == {"user": "bob"}


def test_uploads_and_served_files_stay_apart(clients, shared, alices):
    """Alice's upload folder is not one of Bob's roots; a run folder itself is never served."""
    url, runs_dir, folder = shared
    uploads = Path(runs_dir) / ".uploads" / "user-alice" / "batch"
    uploads.mkdir(parents=True, exist_ok=True)
    for p in good_tiles(8, offset=20):
        shutil.copy(p, uploads / p.name)
    assert clients["alice"].predict(str(uploads), api_name="/scan_folder")["n_images"] == 8
    with pytest.raises(AppError, match="data root"):
        clients["bob"].predict(str(uploads), api_name="/scan_folder")
    assert str(uploads.parent) not in clients["bob"].predict(api_name="/data_roots")["roots"]
    session = httpx.Client(timeout=10)
    assert session.post(url + "login", data={"username": "bob", "password": "bob-pw"}).status_code == 200
    overrides = Path(runs_dir) / alices["run_id"] / "overrides.json"
    assert session.get(f"{url}gradio_api/file={overrides}").status_code in (403, 404)
    archive, _ = clients["alice"].predict(alices["run_id"], api_name="/export_run")
    assert Path(archive).name == f"comet-run-{alices['run_id']}.zip"


def test_a_users_stop_reaches_only_their_own_job(clients, shared):
    started = clients["alice"].predict(str(shared[2]), detector="simplenet", image_size=TINY, rounds=50,
                                       steps_per_round=5, api_name="/start_training")
    with pytest.raises(AppError, match="no job with id"):
        clients["bob"].predict(started["job_id"], api_name="/stop_job")
    assert clients["alice"].predict(started["job_id"], api_name="/job_status")["status"] == "running"
    clients["alice"].predict(started["job_id"], api_name="/stop_job")
    assert wait_for_job(clients["alice"], started["job_id"])["status"] == "stopped"

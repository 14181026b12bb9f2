"""The studio driven through gradio_client against a launched app: train, poll, weights, overrides,
predict, export, stop, loss landscape. Real magnetic-tile images at 64 px, 2 rounds."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from gradio_client import handle_file

from tests.app.conftest import train, wait_for_job
from tests.conftest import MAGNETIC, TINY

# pandas deprecation noise from inside gradio's queue, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


@pytest.fixture(scope="module")
def trained(client, studio) -> dict:
    return train(client, studio.folder)


def test_training_finishes_and_writes_a_run(trained, studio):
    assert trained["status"] == "done", trained["error"]
    assert [row["round"] for row in trained["history"]] == [0, 1]
    assert trained["info"]["n_images"] == 12
    run_dir = studio.runs_dir / trained["run_id"]
    for name in ("model/model.safetensors", "samples.csv", "history.json", "run.json"):
        assert (run_dir / name).exists(), name


def test_the_default_detector_trains_through_the_api_without_a_detector_named(client, studio):
    """What a new user gets: the memory ensemble behind the trust gate, one memory pass, weights in [0, 1],
    and a status line that speaks of memory passes, not of losses it does not have."""
    from comet_studio.app.tabs.train import status_markdown
    from comet_studio.core.detectors.registry import DEFAULT_DETECTOR

    started = client.predict(str(studio.folder), image_size=TINY, api_name="/start_training")
    status = wait_for_job(client, started["job_id"])
    assert status["status"] == "done", status["error"]
    run = json.loads((studio.runs_dir / started["run_id"] / "run.json").read_text())
    assert run["model"]["detector"] == DEFAULT_DETECTOR == "memory"
    assert run["model"]["backbone"]["pool_padding"] == "zeros"
    assert run["model"]["memory"]["n_memories"] == 8  # the default preset's
    assert len(status["history"]) >= 1
    rows = client.predict(started["run_id"], api_name="/run_samples")
    assert len(rows) == 12 and all(0.0 <= r["weight"] <= 1.0 for r in rows)
    text = status_markdown(status)
    assert "memory pass 1" in text and "train loss" not in text


def test_runs_are_listed(client, trained):
    runs = client.predict(api_name="/list_runs")
    assert trained["run_id"] in [r["run_id"] for r in runs]


def test_weights_can_be_read(client, trained, studio):
    rows = client.predict(trained["run_id"], api_name="/run_samples")
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in studio.folder.iterdir())
    assert all(0.0 <= r["weight"] <= 1.0 for r in rows)
    # Weight 0 only for images the robust first opinion (or an override) put out, and they say so.
    assert all(r["weight"] > 0 or r["rejected"] for r in rows)
    assert sum(r["weight"] == 1.0 for r in rows) > len(rows) // 2
    assert all(isinstance(r["score"], float) for r in rows)


def test_override_is_saved_and_honoured_by_the_next_run(client, trained, studio):
    run_id = trained["run_id"]
    rows = client.predict(run_id, api_name="/run_samples")
    excluded, forced = rows[0]["image"], rows[1]["image"]
    client.predict(run_id, excluded, "exclude", api_name="/set_override")
    saved = client.predict(run_id, forced, "good", api_name="/set_override")
    assert saved == {excluded: "exclude", forced: "good"}
    on_disk = json.loads((studio.runs_dir / run_id / "overrides.json").read_text())
    assert on_disk == saved

    retrained = train(client, studio.folder, overrides_from=run_id)
    assert retrained["status"] == "done", retrained["error"]
    assert retrained["info"]["overrides"] == 2
    new_rows = {r["image"]: r for r in client.predict(retrained["run_id"], api_name="/run_samples")}
    assert new_rows[excluded]["override"] == "exclude" and new_rows[excluded]["weight"] == 0.0
    assert new_rows[forced]["override"] == "good" and new_rows[forced]["weight"] == 1.0

    cleared = client.predict(run_id, forced, "auto", api_name="/set_override")
    assert cleared == {excluded: "exclude"}


def test_predict_scores_a_test_image(client, trained):
    image = sorted((MAGNETIC / "test" / "good").glob("*.jpg"))[0]
    slider, gallery, summary, table, roc = client.predict(trained["run_id"], [handle_file(str(image))], "", 0.5,
                                                          api_name="/predict")
    (name, score, verdict, truth), = table["data"]
    assert name == image.name
    assert isinstance(score, float)
    assert verdict in ("pass", "FAIL (anomalous)")
    assert len(slider) == 2 and len(gallery) == 1
    assert "1 images scored" in summary


def test_predict_on_an_mvtec_category_reports_metrics(client, trained, tiny_mvtec):
    _, gallery, summary, table, roc = client.predict(trained["run_id"], [], str(tiny_mvtec), 0.5,
                                                     api_name="/predict")
    assert len(table["data"]) == 12 and len(gallery) == 12
    assert {row[3] for row in table["data"]} == {"good", "anomalous"}
    for metric in ("image AUROC", "pixel AUROC", "AUPRO"):
        assert metric in summary
    assert "ROC" in roc["plot"]


def test_export_zip_holds_the_model_and_the_weights(client, trained, studio):
    run_id = trained["run_id"]
    rows = client.predict(run_id, api_name="/run_samples")
    client.predict(run_id, rows[2]["image"], "exclude", api_name="/set_override")
    archive_path, listing = client.predict(run_id, api_name="/export_run")
    with zipfile.ZipFile(archive_path) as archive:
        names = set(archive.namelist())
        for name in ("model/model.safetensors", "model/model.json", "samples.csv", "overrides.json",
                     "history.json", "run.json"):
            assert f"{run_id}/{name}" in names
        samples = list(csv.DictReader(io.StringIO(archive.read(f"{run_id}/samples.csv").decode())))
    assert len(samples) == 12
    assert {s["path"]: s["override"] for s in samples}[rows[2]["image"]] == "exclude"
    assert "model.safetensors" in listing


def test_the_memories_of_the_fast_preset_reach_the_run(client, studio):
    from comet_studio.core.quality import QUALITY

    started = client.predict(str(studio.folder), image_size=TINY, memories=QUALITY["fast"].memories,
                             api_name="/start_training")
    assert wait_for_job(client, started["job_id"])["status"] == "done"
    run = json.loads((studio.runs_dir / started["run_id"] / "run.json").read_text())
    assert run["model"]["memory"]["n_memories"] == QUALITY["fast"].memories == 4


def test_stop_keeps_the_best_model_so_far(client, studio):
    started = client.predict(str(studio.folder), detector="simplenet", image_size=TINY, rounds=200,
                             steps_per_round=5, api_name="/start_training")
    for _ in range(600):
        status = client.predict(started["job_id"], api_name="/job_status")
        if status["history"]:
            break
    client.predict(started["job_id"], api_name="/stop_job")
    final = wait_for_job(client, started["job_id"])
    assert final["status"] == "stopped"
    assert 1 <= len(final["history"]) < 200
    run = json.loads((studio.runs_dir / started["run_id"] / "run.json").read_text())
    assert run["stopped"] is True
    assert (studio.runs_dir / started["run_id"] / "model" / "model.safetensors").exists()


def test_two_runs_at_once_keep_to_their_own_folders(client, studio):
    """Two browser tabs (or clients) training at the same time each get their own run folder."""
    a = client.predict(str(studio.folder), detector="simplenet", image_size=TINY, rounds=1, steps_per_round=2,
                       iqr_k=1.0, api_name="/start_training")
    b = client.predict(str(studio.folder), detector="simplenet", image_size=TINY, rounds=2, steps_per_round=2,
                       iqr_k=3.0, api_name="/start_training")
    assert a["run_id"] != b["run_id"]
    final_a, final_b = wait_for_job(client, a["job_id"]), wait_for_job(client, b["job_id"])
    assert final_a["status"] == final_b["status"] == "done"
    assert (len(final_a["history"]), len(final_b["history"])) == (1, 2)
    for started, k in ((a, 1.0), (b, 3.0)):
        run = json.loads((studio.runs_dir / started["run_id"] / "run.json").read_text())
        assert run["train"]["comet"]["iqr_k"] == k


def test_loss_landscape_job(client, trained):
    started = client.predict(trained["run_id"], "", 5, 8, api_name="/start_landscape")
    final = wait_for_job(client, started["job_id"])
    assert final["status"] == "done", final["error"]
    (panel,) = final["result"]
    assert len(panel["losses"]) == 5 and all(len(row) == 5 for row in panel["losses"])
    assert panel["run_id"] == trained["run_id"]


def test_bad_requests_get_specific_errors(client, studio):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="does not exist"):
        client.predict(str(studio.folder / "missing"), api_name="/start_training")
    with pytest.raises(AppError, match="no job with id"):
        client.predict("nope", api_name="/job_status")

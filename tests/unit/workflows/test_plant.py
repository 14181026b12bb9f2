"""train-all on a small real plant: three categories (two MVTec-layout copies, one raw ELPV folder) and one
broken folder; interrupted, rerun, and rerun again."""

from __future__ import annotations

import json
import threading

import pytest

from comet_studio.cli.main import main
from comet_studio.core.config import BackboneConfig, ModelConfig, TrainConfig
from comet_studio.core.io.trainer_state import STATE_FILE
from comet_studio.workflows.plant import (CategoryJob, PlantCategory, find_plant_categories, finished_run, read_summary,
                                     train_all, train_category)
from tests.conftest import TINY
from tests.unit.workflows.plant_fixtures import BROKEN_CATEGORY, GOOD_CATEGORIES, build_plant

MODEL = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=TINY))  # rounds to stop between
TRAIN = TrainConfig(rounds=1, steps_per_round=2, device="cpu")
CLI_OPTIONS = ["--model", "simplenet", "--image-size", str(TINY), "--rounds", "1", "--steps", "2", "--device", "cpu"]
IMAGES = {"cookies": 10, "magnetic_tile": 10, "solar_cells": 12}


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    return build_plant(tmp_path_factory.mktemp("plant"))


@pytest.fixture(scope="module")
def interrupted(plant, tmp_path_factory):
    """A first call stopped (as by Ctrl-C) once its first category finished."""
    runs = tmp_path_factory.mktemp("runs")
    stop = threading.Event()
    result = train_all(plant, runs, MODEL, TRAIN, stop=stop, on_row=lambda row: stop.set())
    return runs, result


@pytest.fixture(scope="module")
def resumed(plant, interrupted):
    """The same command again, through the CLI, after the interruption."""
    runs, _ = interrupted
    code = main(["train-all", str(plant), "--out", str(runs), *CLI_OPTIONS])
    return runs, code, {row["category"]: row for row in read_summary(runs / "summary.csv")}


def test_interrupted_call_writes_the_finished_category_and_marks_the_rest_pending(interrupted):
    runs, result = interrupted
    statuses = {row["category"]: row["status"] for row in result.rows}
    assert statuses == {"cookies": "trained", BROKEN_CATEGORY: "pending", "magnetic_tile": "pending",
                        "solar_cells": "pending"}
    assert [row["status"] for row in read_summary(runs / "summary.csv")] == list(statuses.values())


def test_rerun_trains_only_what_was_missing_and_reports_the_broken_folder(resumed):
    runs, code, rows = resumed
    assert code == 1  # one category could not be trained
    assert rows["cookies"]["status"] == "done before"
    assert {rows[c]["status"] for c in ("magnetic_tile", "solar_cells")} == {"trained"}
    for name in GOOD_CATEGORIES:
        info = json.loads((runs / name / "run.json").read_text())
        assert info["stopped"] is False and info["n_images"] == IMAGES[name] == int(rows[name]["images"])
        assert rows[name]["skipped_files"] == "0" and rows[name]["error"] == ""
        assert int(rows[name]["rejected"]) == info["n_rejected"] and float(rows[name]["seconds"]) > 0
        assert (runs / name / "model" / "model.safetensors").exists() and (runs / name / "samples.csv").exists()
    broken = rows[BROKEN_CATEGORY]
    assert broken["status"] == "error" and "NotEnoughImagesError" in broken["error"]
    assert "0 usable image(s)" in broken["error"] and not (runs / BROKEN_CATEGORY / "run.json").exists()


def test_third_call_skips_every_finished_category(plant, resumed, capsys):
    runs, _, _ = resumed
    stamps = {c: (runs / c / "model" / "model.safetensors").stat().st_mtime_ns for c in GOOD_CATEGORIES}
    assert main(["train-all", str(plant), "--out", str(runs), *CLI_OPTIONS]) == 1
    printed = capsys.readouterr().out
    assert "category" in printed and "done before" in printed and "summary written to" in printed
    rows = {row["category"]: row for row in read_summary(runs / "summary.csv")}
    assert {rows[c]["status"] for c in GOOD_CATEGORIES} == {"done before"}
    assert stamps == {c: (runs / c / "model" / "model.safetensors").stat().st_mtime_ns for c in GOOD_CATEGORIES}


def test_a_finished_run_counts_only_with_the_same_settings(plant, resumed):
    runs, _, _ = resumed
    category = PlantCategory("cookies", plant / "cookies", "mvtec")
    assert finished_run(CategoryJob(category, runs / "cookies", MODEL, TRAIN)) is not None
    elsewhere = TrainConfig(rounds=1, steps_per_round=2, device="auto")  # where it trains is not what it learns
    assert finished_run(CategoryJob(category, runs / "cookies", MODEL, elsewhere)) is not None
    with pytest.raises(ValueError, match="other settings"):
        finished_run(CategoryJob(category, runs / "cookies", MODEL, TrainConfig(rounds=2, device="cpu")))
    assert finished_run(CategoryJob(category, runs / "no_such_run", MODEL, TRAIN)) is None


def test_a_stopped_run_is_not_finished(plant, resumed, tmp_path):
    runs, _, _ = resumed
    run = tmp_path / "cookies"
    (run / "model").mkdir(parents=True)
    for name in ("model.safetensors", "model.json"):
        (run / "model" / name).write_bytes((runs / "cookies" / "model" / name).read_bytes())
    info = json.loads((runs / "cookies" / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "stopped": True}))
    job = CategoryJob(PlantCategory("cookies", plant / "cookies", "mvtec"), run, MODEL, TRAIN)
    assert finished_run(job) is None


def test_categories_are_the_visible_sub_folders(plant, tmp_path):
    runs_inside = plant / "runs"
    runs_inside.mkdir(exist_ok=True)
    (plant / ".cache").mkdir(exist_ok=True)
    found = find_plant_categories(plant, exclude=runs_inside)
    assert [c.name for c in found] == sorted([*GOOD_CATEGORIES, BROKEN_CATEGORY])
    assert {c.name: c.layout for c in found}["solar_cells"] == "folder"
    assert {c.name: c.layout for c in found}["cookies"] == "mvtec"
    assert [c.name for c in find_plant_categories(plant, names=("cookies",))] == ["cookies"]
    with pytest.raises(ValueError, match="not found"):
        find_plant_categories(plant, names=("bottle",))
    with pytest.raises(ValueError, match="itself one category"):
        find_plant_categories(plant / "cookies")
    with pytest.raises(FileNotFoundError, match="no category folders"):
        find_plant_categories(tmp_path)
    runs_inside.rmdir()
    (plant / ".cache").rmdir()


def test_a_category_stopped_between_rounds_continues_from_its_last_round(plant, tmp_path):
    job = CategoryJob(PlantCategory("solar_cells", plant / "solar_cells", "folder"), tmp_path / "solar_cells", MODEL,
                      TrainConfig(rounds=2, steps_per_round=2, device="cpu"))
    stop = threading.Event()

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "rounds" and done == 1:  # Ctrl-C during the first round: it ends, then training stops
            stop.set()

    first = train_category(job, progress=progress, stop=stop)
    assert first["status"] == "stopped" and (job.run_dir / STATE_FILE).exists() and finished_run(job) is None
    second = train_category(job)
    history = json.loads((job.run_dir / "history.json").read_text())
    assert second["status"] == "trained" and len(history) == 2 and not (job.run_dir / STATE_FILE).exists()
    assert finished_run(job) is not None

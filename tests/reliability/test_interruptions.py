"""Training stopped at random points: Ctrl-C (SIGINT) and SIGKILL to a ``comet-studio train`` process, and
the app's Stop button through its API. Afterwards the saved model and the user's overrides are intact and
loadable, and ``--resume`` / ``train_run(resume=True)`` finishes the run from its last completed round, with
exactly the result of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from comet_studio.cli.main import main as cli_main
from comet_studio.core.config import BackboneConfig, ModelConfig, TrainConfig, config_from_dict
from comet_studio.core.data import scan_folder
from comet_studio.core.io.trainer_state import STATE_FILE, read_trainer_state
from comet_studio.core.model import AnomalyModel
from comet_studio.workflows.run import read_overrides, read_samples, train_run, write_overrides
from tests.conftest import TINY, good_tiles

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

SEED = os.environ.get("COMET_RELIABILITY_SEED", "0")  # another seed, other random points (soak runs)
ROUNDS = 3  # in-process runs
CLI_ROUNDS = 12  # a process to interrupt: ~0.25 s a round here, so a signal up to 1 s after round 1 lands mid-run
CLI_OPTIONS = ["--model", "simplenet", "--image-size", str(TINY), "--rounds", str(CLI_ROUNDS), "--steps", "3",
               "--device", "cpu"]
MODEL = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=TINY))  # resumable rounds


def _train_config(rounds: int = ROUNDS) -> TrainConfig:
    return TrainConfig(rounds=rounds, steps_per_round=2, device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiles")
    for p in good_tiles(12):
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture(scope="module")
def features(folder):
    paths = scan_folder(folder).paths
    return AnomalyModel(MODEL, train=_train_config()).extract(paths)


class Killed(Exception):
    """Stands in for a process killed between two rounds."""


def _killed_after(round_: int):
    def callback(event):
        if event.round == round_:
            raise Killed
    return callback


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# -- in-process: exact continuation and refusals -------------------------------------------------------------
def test_resumed_run_equals_an_uninterrupted_one(folder, features, tmp_path):
    whole = train_run(folder, tmp_path / "whole", MODEL, _train_config(), features=features)
    with pytest.raises(Killed):  # dies in round 2 (index 1): round 0 is saved
        train_run(folder, tmp_path / "cut", MODEL, _train_config(), features=features, callback=_killed_after(1))
    state, _ = read_trainer_state(tmp_path / "cut" / STATE_FILE)
    assert state.round == 0
    between = AnomalyModel.load(tmp_path / "cut", device="cpu")  # the best model so far, loadable mid-run
    assert np.isfinite(between.predict(scan_folder(folder).paths[:2]).image_score).all()

    resumed = train_run(folder, tmp_path / "cut", MODEL, _train_config(), features=features, resume=True)
    assert resumed.resumed_after == 0 and not resumed.stopped
    for name in ("scores", "weights", "rejected"):
        assert np.array_equal(getattr(whole.model.result_, name), getattr(resumed.model.result_, name)), name
    assert resumed.model.result_.threshold == whole.model.result_.threshold
    histories = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("whole", "cut")]
    assert _without_seconds(histories[0]) == _without_seconds(histories[1])
    assert [row["round"] for row in histories[1]] == list(range(ROUNDS))
    assert not (tmp_path / "cut" / STATE_FILE).exists()  # finished: nothing left to resume
    with pytest.raises(ValueError, match="finished all its rounds"):
        train_run(folder, tmp_path / "cut", MODEL, _train_config(), features=features, resume=True)


def test_resume_refuses_a_run_whose_settings_changed(folder, features, tmp_path):
    out = tmp_path / "run"
    paths = scan_folder(folder).paths
    with pytest.raises(Killed):
        train_run(folder, out, MODEL, _train_config(), features=features, overrides={paths[0]: "exclude"},
                  callback=_killed_after(1))
    with pytest.raises(ValueError, match=r"train\.rounds \(3 then, 8 now\)"):
        train_run(folder, out, MODEL, _train_config(rounds=8), features=features, resume=True)
    other_model = ModelConfig(detector="simplenet", backbone=BackboneConfig(image_size=2 * TINY))
    with pytest.raises(ValueError, match=r"model\.backbone\.image_size \(64 then, 128 now\)"):
        train_run(folder, out, other_model, _train_config(), resume=True)
    with pytest.raises(ValueError, match="overrides"):
        train_run(folder, out, MODEL, _train_config(), features=features, overrides={}, resume=True)
    smaller = scan_folder(folder)
    smaller = type(smaller)(root=smaller.root, paths=smaller.paths[:-1], skipped=())
    with pytest.raises(ValueError, match=r"images\.count \(12 then, 11 now\)"):
        train_run(smaller, out, MODEL, _train_config(), features=features[:-1], resume=True)
    # The same settings (overrides read back from the run folder) resume.
    assert train_run(folder, out, MODEL, _train_config(), features=features, resume=True).resumed_after == 0


def test_a_fresh_run_never_resumes_an_old_state(folder, features, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train_run(folder, out, MODEL, _train_config(), features=features, callback=_killed_after(1))
    assert (out / STATE_FILE).exists()
    with pytest.raises(Killed):  # a new run into the same folder, killed before its first round ends
        train_run(folder, out, MODEL, _train_config(), features=features, callback=_killed_after(0))
    assert not (out / STATE_FILE).exists()


def test_a_stop_before_the_first_step_saves_no_model(folder, features, tmp_path):
    """A stop set before any training step: no untrained head is saved, and a model already in the folder
    (an earlier run's) is left as it was."""
    import threading

    from comet_studio.core.features import StopRequested

    stop = threading.Event()
    stop.set()
    with pytest.raises(StopRequested, match="no model was saved"):
        train_run(folder, tmp_path / "fresh", MODEL, _train_config(), features=features, stop=stop)
    assert not (tmp_path / "fresh" / "model").exists()
    out = tmp_path / "trained"
    train_run(folder, out, MODEL, _train_config(), features=features)
    before = (out / "model" / "model.safetensors").read_bytes()
    with pytest.raises(StopRequested):
        train_run(folder, out, MODEL, _train_config(), features=features, stop=stop)
    assert (out / "model" / "model.safetensors").read_bytes() == before


# -- the CLI, interrupted by signals -------------------------------------------------------------------------
def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


def _interrupt(data: Path, out: Path, signals: list[signal.Signals], after: str, delay: float) -> int:
    """Start ``comet-studio train``; once ``after`` exists in the run folder and ``delay`` seconds more have
    passed, send ``signals``. Returns the exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "comet_studio.cli.main", "train", str(data), "--out", str(out),
                                *CLI_OPTIONS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if _wait_for(out / after, process):
            time.sleep(delay)
            for sig in signals:
                if process.poll() is None:
                    process.send_signal(sig)
                time.sleep(0.05)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in output or signal.SIGINT not in signals, output[-2000:]
    return process.returncode


def _check_interrupted(out: Path, overrides: dict[str, str], paths: list[str]) -> bool:
    """What a killed or stopped run must leave: the overrides as the user set them, and a loadable model
    and trainer state wherever they were written. Returns whether a completed round was saved."""
    assert read_overrides(out) == overrides
    if (out / "history.json").exists():
        json.loads((out / "history.json").read_text())
    if (out / "model").exists():
        model = AnomalyModel.load(out, device="cpu")
        assert np.isfinite(model.predict(paths[:2]).image_score).all()
    if not (out / STATE_FILE).exists():
        return False
    state, _ = read_trainer_state(out / STATE_FILE)
    assert 0 <= state.round < CLI_ROUNDS and (out / "model").exists()
    return True


def _assert_interrupted(code: int, out: Path, signals: list[signal.Signals]) -> None:
    """The signal really interrupted the run: a run that finished before it arrived tests nothing."""
    if signal.SIGKILL in signals:
        assert code == -signal.SIGKILL, f"exit code {code}: the process was not killed (it ended first)"
        return
    if code == 130:  # Ctrl-C before the first round finished: nothing saved, the shell's code for it
        return
    assert code == 0, code
    run = json.loads((out / "run.json").read_text())
    assert run["stopped"] is True, "the Ctrl-C came after training had finished: nothing was interrupted"


def _resume_and_check(data: Path, out: Path, overrides: dict[str, str], capsys) -> None:
    saved = (out / STATE_FILE).exists()
    # The signal came after the last round: the run is complete.
    finished = (out / "run.json").exists() and not json.loads((out / "run.json").read_text())["stopped"]
    code = cli_main(["train", str(data), "--out", str(out), *CLI_OPTIONS, "--resume"])
    printed = capsys.readouterr()
    if finished:
        assert code == 2 and "finished all its rounds" in printed.err, printed
        return
    assert code == 0, printed.err
    assert ("resumed after round" in printed.out) == saved, printed.out
    run = json.loads((out / "run.json").read_text())
    assert run["stopped"] is False
    history = json.loads((out / "history.json").read_text())
    assert [row["round"] for row in history] == list(range(CLI_ROUNDS))
    rows = {r["path"]: r for r in read_samples(out)}
    for path, choice in overrides.items():
        assert rows[path]["override"] == choice
    assert not (out / STATE_FILE).exists()


# (name, signals, file to wait for, random delay range in seconds after it appears)
CASES = [
    ("ctrl-c early", [signal.SIGINT], "skipped.csv", (0.0, 0.4)),  # during extraction or the first round
    ("ctrl-c mid-run", [signal.SIGINT], STATE_FILE, (0.0, 1.0)),
    ("kill -9 mid-run", [signal.SIGKILL], STATE_FILE, (0.0, 1.0)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_interrupted_at_a_random_point_then_resumed(folder, tmp_path, capsys, case):
    name, signals, after, (low, high) = case
    delay = random.Random(f"{name}-{SEED}").uniform(low, high)
    paths = list(scan_folder(folder).paths)
    out = tmp_path / "run"
    overrides = {paths[3]: "exclude", paths[5]: "good"}
    write_overrides(out, overrides)  # set in the app before training (the CLI reads them from the run folder)
    code = _interrupt(folder, out, signals, after, delay)
    saved = _check_interrupted(out, overrides, paths)
    _assert_interrupted(code, out, signals)  # stopped cleanly, stopped in extraction, or killed
    _resume_and_check(folder, out, overrides, capsys)
    print(f"{name}: signal {delay:.2f} s after {after}; exit code {code}; a completed round saved: {saved}")


# -- the app's Stop ------------------------------------------------------------------------------------------
def test_app_stop_at_a_random_point_keeps_a_resumable_run(client, studio):
    from tests.app.conftest import wait_for_job

    # Long enough that a Stop 0.5-2.5 s after the start lands before the last round: on 2 cores it lands after
    # 9-14 rounds; with 20 rounds a CI run once finished first ("done after 20 rounds").
    rounds = 60
    started = client.predict(str(studio.folder), detector="simplenet", image_size=TINY, rounds=rounds,
                             steps_per_round=3, api_name="/start_training")
    time.sleep(random.Random(f"app stop-{SEED}").uniform(0.5, 2.5))
    client.predict(started["job_id"], api_name="/stop_job")
    final = wait_for_job(client, started["job_id"])
    print(f"app stop: {final['status']} after {len(final['history'])} round(s)")
    assert final["status"] == "stopped", f"the Stop did not stop the run ({final['status']}): {final['error']}"
    run_dir = studio.runs_dir / started["run_id"]
    if not final["history"]:  # stopped during feature extraction: nothing trained, nothing to keep
        assert not (run_dir / "model").exists()
        return
    paths = [r["path"] for r in read_samples(run_dir)]
    assert np.isfinite(AnomalyModel.load(run_dir, device="cpu").predict(paths[:2]).image_score).all()
    stopped = json.loads((run_dir / "run.json").read_text())["stopped"]
    assert stopped == (final["status"] == "stopped")  # a Stop after the last step stopped nothing
    if not stopped:
        return
    # A run stopped in the app continues from the core (or `comet-studio train --resume`) with its settings.
    meta = json.loads((run_dir / "run.json").read_text())
    resumed = train_run(studio.folder, run_dir, config_from_dict(ModelConfig, meta["model"]),
                        config_from_dict(TrainConfig, meta["train"]), resume=True)
    assert resumed.resumed_after is not None and not resumed.stopped
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["round"] for row in history] == list(range(rounds))


def test_a_stop_after_the_last_step_reports_the_run_as_done():
    """Stop pressed while a finished run is being saved: the job says done (the run is complete), not stopped."""
    from comet_studio.app.jobs import JobRegistry

    registry = JobRegistry()

    def finished_late(job):
        job.stop.set()  # pressed after the last round
        return {"run_id": "r", "stopped": False}

    def stopped_early(job):
        job.stop.set()
        return {"run_id": "r", "stopped": True}

    assert registry.wait(registry.start("train", "late", finished_late).id, 10).status == "done"
    assert registry.wait(registry.start("train", "early", stopped_early).id, 10).status == "stopped"

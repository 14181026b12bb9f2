"""What `train` and `evaluate` write: strict JSON any reader parses, and a new run folder when none is named."""

from __future__ import annotations

import json
import math

import pytest

from comet_studio.cli.main import main as cli
from comet_studio.core.io.atomic import json_text, write_json_atomic


def _strict(text: str):
    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_json_text_writes_non_finite_numbers_as_null(tmp_path):
    data = {"loss": math.nan, "rows": [1.5, math.inf, {"x": -math.inf}], "name": "a", "n": 3}
    assert _strict(json_text(data)) == {"loss": None, "rows": [1.5, None, {"x": None}], "name": "a", "n": 3}
    write_json_atomic(tmp_path / "history.json", [{"train_loss": math.nan, "round": 0}])
    assert _strict((tmp_path / "history.json").read_text()) == [{"train_loss": None, "round": 0}]
    with pytest.raises(ValueError):
        _strict('{"loss": NaN}')  # what json.dumps writes by default: the reader above would refuse it


def test_a_default_run_and_its_evaluation_write_strict_json(tiny_mvtec, tmp_path, capsys):
    run = tmp_path / "run"
    # The default detector is training-free: its rounds have no loss (NaN), which used to be written as NaN.
    assert cli(["train", str(tiny_mvtec), "--out", str(run), "--image-size", "96", "--device", "cpu"]) == 0
    history = _strict((run / "history.json").read_text())
    assert history and history[0]["train_loss"] is None and history[0]["threshold"] > 0
    assert _strict((run / "run.json").read_text())["n_images"] == 16
    assert cli(["evaluate", str(run), str(tiny_mvtec), "--device", "cpu"]) == 0
    metrics = _strict((run / "metrics.json").read_text())
    assert metrics["n_test"] == 12 and 0.0 <= metrics["image_auroc"] <= 1.0
    assert "image_auroc: " in capsys.readouterr().out


def test_train_without_out_writes_a_new_run_folder_each_time(tiny_mvtec, tmp_path, monkeypatch, capsys):
    """`comet-studio train FOLDER`, as a new user types it: runs/<folder name>, then -2, never over a model."""
    monkeypatch.chdir(tmp_path)
    assert cli(["train", str(tmp_path / "missing")]) == 2  # a folder that cannot train leaves no run behind
    assert not (tmp_path / "runs").exists()
    for expected in ("tile", "tile-2"):
        assert cli(["train", str(tiny_mvtec), "--image-size", "96", "--device", "cpu"]) == 0
        assert f"run written to runs/{expected}" in capsys.readouterr().out
        assert (tmp_path / "runs" / expected / "model" / "model.safetensors").exists()
    assert cli(["train", str(tiny_mvtec), "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    # predict without --out: predictions/<run name>, a new folder each time
    for expected in ("tile", "tile-2"):
        assert cli(["predict", "runs/tile", str(tiny_mvtec / "test" / "crack"), "--device", "cpu",
                    "--no-heatmaps"]) == 0
        assert f"wrote predictions/{expected}/predictions.csv" in capsys.readouterr().out

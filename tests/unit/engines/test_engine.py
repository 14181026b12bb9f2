"""Engines without Ray: the local engine, engine selection, and the message when Ray is missing."""

from __future__ import annotations

import sys

import pytest

from comet_studio.cli.main import main
from comet_studio.engines import LocalEngine, RayUnavailableError, make_engine


def _invert(x: int) -> float:
    return 1 / x


def test_local_engine_reports_a_failing_job_and_runs_the_others():
    with LocalEngine() as engine:
        outcomes = list(engine.map_unordered(_invert, [1, 0, 4]))
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert outcomes[0].value == 1.0 and outcomes[2].value == 0.25
    assert outcomes[1].value is None and outcomes[1].error.startswith("ZeroDivisionError: ")


def test_make_engine_checks_its_arguments():
    assert isinstance(make_engine("local"), LocalEngine)
    with pytest.raises(ValueError, match="needs --engine ray"):
        make_engine("local", address="auto")
    with pytest.raises(ValueError, match="engine must be one of"):
        make_engine("spark")


def test_ray_engine_without_ray_names_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as in an install without it
    with pytest.raises(RayUnavailableError, match=r'pip install "comet-studio\[ray\]"'):
        make_engine("ray")
    assert main(["train-all", str(tmp_path), "--out", str(tmp_path / "runs"), "--engine", "ray"]) == 2
    assert 'pip install "comet-studio[ray]"' in capsys.readouterr().err

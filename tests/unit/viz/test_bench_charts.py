"""The bench's charts (viz/bench.py): a PNG is listed as written only when it was, and a chart that did not
render is reported with the reason, the HTML charts kept.

Kaleido hands ``plotly.io.write_images`` the renders that failed (a timeout on a loaded machine) as a return
value that plotly drops, and deletes their files: the bench then listed PNGs that did not exist
(test_bench.py::test_markdown_table_and_charts_are_written failed under load only)."""

from __future__ import annotations

import asyncio
import os
import shutil

import plotly.graph_objects as go
import pytest

from comet_studio.viz import bench as charts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figures(n: int) -> list[go.Figure]:
    return [go.Figure(go.Scatter(x=[0.0, 0.2], y=[0.9, 0.8 - 0.1 * k])) for k in range(n)]


class _SecondRenderTimesOut:
    """Stands in for kaleido.Kaleido: the first chart renders, the second times out."""

    def __init__(self, **options) -> None:
        self.renders = 0

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> bool:
        return False

    async def calc_fig(self, figure, opts, *, topojson=None) -> bytes:
        self.renders += 1
        if self.renders == 2:
            raise TimeoutError
        return PNG_SIGNATURE


def test_a_chart_that_does_not_render_is_reported_and_no_png_is_listed(tmp_path, monkeypatch):
    kaleido = pytest.importorskip("kaleido")
    monkeypatch.setattr(kaleido, "Kaleido", _SecondRenderTimesOut)
    html = [tmp_path / f"chart{k}.html" for k in range(2)]
    written, error = charts.write_figures(_figures(2), html)
    assert written == []
    assert error and "took longer than" in error and "HTML charts were written" in error
    assert all(p.exists() for p in html) and not list(tmp_path.glob("*.png"))


class _PageNotReadyOnFirstStart:
    """Stands in for kaleido.Kaleido: the first browser's page has not loaded kaleido's script yet (a race
    seen on loaded machines, "ReferenceError: kaleido_scopes is not defined"); the next browser renders."""

    starts = 0

    def __init__(self, **options) -> None:
        type(self).starts += 1

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> bool:
        return False

    async def calc_fig(self, figure, opts, *, topojson=None) -> bytes:
        if type(self).starts == 1:
            raise RuntimeError("ReferenceError: kaleido_scopes is not defined")
        return PNG_SIGNATURE


class _TimeoutSurfacesAsAnotherError(_PageNotReadyOnFirstStart):
    """A render cancelled at the timeout whose browser call raises its own error instead of TimeoutError
    (choreographer's ChannelClosedError under load)."""

    async def calc_fig(self, figure, opts, *, topojson=None) -> bytes:
        await asyncio.sleep(2 * charts.RENDER_TIMEOUT)
        raise RuntimeError("Executor is closed.")


def test_a_browser_whose_page_was_not_ready_is_started_once_more(tmp_path, monkeypatch):
    kaleido = pytest.importorskip("kaleido")
    monkeypatch.setattr(kaleido, "Kaleido", _PageNotReadyOnFirstStart)
    monkeypatch.setattr(_PageNotReadyOnFirstStart, "starts", 0)
    html = [tmp_path / f"chart{k}.html" for k in range(2)]
    written, error = charts.write_figures(_figures(2), html)
    assert error is None and written == [p.with_suffix(".png") for p in html]
    assert _PageNotReadyOnFirstStart.starts == 2


def test_a_render_past_the_timeout_is_reported_as_a_timeout_whatever_the_browser_raised(tmp_path, monkeypatch):
    kaleido = pytest.importorskip("kaleido")
    monkeypatch.setattr(kaleido, "Kaleido", _TimeoutSurfacesAsAnotherError)
    monkeypatch.setattr(_TimeoutSurfacesAsAnotherError, "starts", 0)
    monkeypatch.setattr(charts, "RENDER_TIMEOUT", 0.05)
    html = [tmp_path / f"chart{k}.html" for k in range(2)]
    written, error = charts.write_figures(_figures(2), html)
    assert written == [] and "took longer than 0.05 s" in error
    assert _TimeoutSurfacesAsAnotherError.starts == 1  # a timeout is not retried: it would time out again


def _browser() -> str | None:
    return os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("google-chrome")


@pytest.mark.skipif(_browser() is None, reason="no Chrome/Chromium for kaleido (apt-get install -y chromium)")
def test_real_kaleido_writes_every_png_or_reports_the_render_timeout(tmp_path, monkeypatch):
    html = [tmp_path / f"chart{k}.html" for k in range(2)]
    written, error = charts.write_figures(_figures(2), html)
    assert error is None and written == [p.with_suffix(".png") for p in html]
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)

    # A render slower than the timeout: what a loaded machine does to kaleido's 90 s.
    monkeypatch.setattr(charts, "RENDER_TIMEOUT", 1e-3)
    again = [tmp_path / "slow" / p.name for p in html]
    again[0].parent.mkdir()
    written, error = charts.write_figures(_figures(2), again)
    assert written == [] and "took longer than" in error
    assert not list(again[0].parent.glob("*.png"))

"""The bench's charts: image AUROC vs planted contamination, one line per model + method, written as HTML
(always) and PNG through kaleido, which drives a Chrome/Chromium; when that cannot work the reason is returned
and the HTML is kept."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["noise_figure", "write_figures"]

PNG_OPTIONS = {"format": "png", "width": 900, "height": 550}
RENDER_TIMEOUT = 90.0  # seconds one chart may take in Chromium (kaleido's default) before PNG export fails


def noise_figure(summary: list[dict], category: str) -> go.Figure:
    """Image AUROC vs contamination for one category from the bench summary (one entry per category, model,
    method, protocol and noise with ``image_auroc_mean``/``_std`` and ``n_seeds``): std error bars."""
    summary = [s for s in summary if s["category"] == category and s["n_seeds"] > 0]
    protocols = {s["protocol"] for s in summary}
    figure = go.Figure()
    for line in dict.fromkeys((s["model"], s["method"], s["protocol"]) for s in summary):
        points = sorted((s for s in summary if (s["model"], s["method"], s["protocol"]) == line),
                        key=lambda s: s["noise"])
        name = f"{line[0]} + {line[1]}" + (f" ({line[2]})" if len(protocols) > 1 else "")
        figure.add_trace(go.Scatter(
            x=[s["noise"] for s in points], y=[s["image_auroc_mean"] for s in points], mode="lines+markers",
            name=name, error_y={"type": "data", "array": [s["image_auroc_std"] for s in points], "visible": True},
            customdata=[s["n_seeds"] for s in points],
            hovertemplate="noise %{x}<br>image AUROC %{y:.3f}<br>seeds %{customdata}<extra>" + name + "</extra>"))
    figure.update_layout(title=f"{category}: image AUROC vs planted contamination", template="plotly_white",
                         xaxis_title="contamination ratio (planted anomalies / clean training images)",
                         yaxis_title="image AUROC (mean ± std over seeds)", legend_title="model + method")
    return figure


def _render_pngs(figures: list[go.Figure]) -> list[bytes]:
    """Every chart as PNG bytes, rendered in one Chromium; raises when any render fails or times out.

    Not ``pio.write_images``: kaleido hands it the renders that failed as a return value, which plotly drops,
    so a chart that timed out (a loaded machine) was reported written while kaleido had deleted its file."""
    import kaleido

    defaults = pio.defaults  # what plotly's own to_image passes to kaleido
    options = {"plotlyjs": defaults.plotlyjs, "mathjax": defaults.mathjax, "headers": defaults.headers}

    async def render_one(browser, figure: go.Figure) -> bytes:
        started = time.monotonic()
        try:
            return await browser.calc_fig(figure.to_dict(), PNG_OPTIONS, topojson=defaults.topojson)
        except Exception as error:
            # A timed-out render is cancelled, and on a loaded machine the cancelled browser call can raise its
            # own error (choreographer's ChannelClosedError) in place of kaleido's TimeoutError: the clock says.
            if time.monotonic() - started >= RENDER_TIMEOUT and not _timed_out(error):
                raise TimeoutError(f"render exceeded {RENDER_TIMEOUT:g} s") from error
            raise

    async def render() -> list[bytes]:
        async with kaleido.Kaleido(timeout=RENDER_TIMEOUT, **{k: v for k, v in options.items() if v}) as browser:
            return [await render_one(browser, figure) for figure in figures]

    # Its own thread and event loop (as kaleido's sync calls do), so a caller inside a running loop works too.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, render()).result()


def _timed_out(error: BaseException | None) -> bool:
    """Whether a render timeout is behind ``error`` (kaleido's, or one raised while handling it)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (TimeoutError, asyncio.TimeoutError)):  # the same class from Python 3.11
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _render_with_one_retry(figures: list[go.Figure]) -> list[bytes]:
    try:
        return _render_pngs(figures)
    except Exception as error:
        if _timed_out(error):
            raise
        # Once more in a fresh browser: on a loaded machine kaleido's page can be asked to render before its own
        # script has loaded ("ReferenceError: kaleido_scopes is not defined"), about one start in tens.
        return _render_pngs(figures)


def _write_pngs(figures: list[go.Figure], paths: list[Path]) -> str | None:
    """PNG through kaleido: all charts rendered first, then written. Returns why it failed, or None."""
    try:
        images = _render_with_one_retry(figures)
    except Exception as error:  # noqa: BLE001 - any kaleido/browser failure means "HTML only"
        if _timed_out(error):
            return (f"PNG export failed (a chart took longer than {RENDER_TIMEOUT:g} s to render in Chromium: "
                    "a loaded machine); the HTML charts were written")
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return (f"PNG export failed ({reason}); the HTML charts were written. kaleido needs Chrome or Chromium: "
                f"`apt-get install -y chromium` or set BROWSER_PATH to the browser executable")
    for image, path in zip(images, paths, strict=True):
        path.write_bytes(image)
    return None


def write_figures(figures: list[go.Figure], html: list[Path], *, png: bool = True) -> tuple[list[Path], str | None]:
    """Write each figure to its ``html`` path and, with ``png``, beside it as .png; returns (the PNGs written,
    why PNG export failed or None)."""
    for figure, path in zip(figures, html, strict=True):
        # "directory": one plotly.min.js beside the charts, so they open offline.
        figure.write_html(path, include_plotlyjs="directory")
    png_paths = [p.with_suffix(".png") for p in html]
    error = _write_pngs(figures, png_paths) if png and figures else None
    return ([] if error or not png else png_paths), error

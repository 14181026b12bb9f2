"""The bench report: mean +- std over seeds as a markdown table, and image AUROC vs noise as charts
(drawn and written by ``viz/bench.py``: HTML always, PNG when kaleido works; otherwise the report says why).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...viz.bench import noise_figure, write_figures

__all__ = ["ReportFiles", "summarise", "pivot_table", "markdown_report", "write_report"]

GROUP = ("category", "model", "method", "protocol", "noise")
SHOWN = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"), ("f1_max", "F1-max"),
         ("verdict_precision", "verdict P"), ("verdict_recall", "verdict R"),
         ("planted_in_lowest", "planted in lowest"), ("planted_auroc", "planted AUROC"),
         ("rejection_precision", "rejection P"),
         ("rejection_recall", "rejection R"), ("fit_seconds", "fit s"))
NOTE = ("Model selection inside every run uses no test labels: the trainer selects the round by the loss on a "
        "held-out split of the (contaminated) training set; test labels are used only to compute the metrics.")


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: list[Path] = field(default_factory=list)
    png: list[Path] = field(default_factory=list)
    png_error: str | None = None  # why PNG export did not work, when it did not


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(finite.mean()), std, int(finite.size)


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per (category, model, method, protocol, noise): ``<metric>_mean``/``_std`` over the seeds
    that finished, ``n_seeds`` and ``n_failed``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in GROUP)].append(row)
    summary = []
    for key in sorted(groups):
        members = groups[key]
        ok = [r for r in members if not r["error"]]
        entry = dict(zip(GROUP, key, strict=True))
        entry.update(n_seeds=len(ok), n_failed=len(members) - len(ok))
        for metric, _ in SHOWN:
            entry[f"{metric}_mean"], entry[f"{metric}_std"], _n = _mean_std([r[metric] for r in ok])
        summary.append(entry)
    return summary


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if std > 0 else f"{mean:.3f}"


PIVOTED = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"))


def pivot_table(summary: list[dict], category: str, protocol: str, metric: str) -> list[str]:
    """Markdown lines: one row per model + method, one column per noise level, ``metric`` mean ± std.
    Noise 0 plants nothing, so a protocol without its own noise-0 rows shows the other protocol's."""
    entries = [s for s in summary if s["category"] == category and s["n_seeds"] > 0]
    own = [s for s in entries if s["protocol"] == protocol]
    if not any(s["noise"] == 0 for s in own):
        own += [s for s in entries if s["noise"] == 0]
    noises = sorted({s["noise"] for s in own})
    header = ["model", "method"] + [f"noise {n:g}" for n in noises]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, method in dict.fromkeys((s["model"], s["method"]) for s in own):
        cells = {s["noise"]: s for s in own if (s["model"], s["method"]) == (model, method)}
        values = [_cell(cells[n][f"{metric}_mean"], cells[n][f"{metric}_std"]) if n in cells else "" for n in noises]
        lines.append("| " + " | ".join([model, method] + values) + " |")
    return lines


def _summary_section(summary: list[dict], category: str) -> list[str]:
    lines = []
    for protocol in sorted({s["protocol"] for s in summary if s["category"] == category and s["noise"] > 0}
                           or {"move"}):
        for metric, label in PIVOTED:
            lines += [f"### {category}, {protocol} protocol: {label}", ""]
            lines += pivot_table(summary, category, protocol, metric) + [""]
    return lines


def markdown_report(rows: list[dict], settings: dict | None = None) -> str:
    """results.md: settings, the no-test-labels note, one table per category, then the failed cells."""
    lines = ["# CoMet Studio bench", ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), ""]
    lines += [NOTE, "", "Values are mean ± std over the seeds that finished (`-`: not applicable, e.g. no planted "
              "images at noise 0). Planted in lowest: share of planted images among the k lowest-weight training "
              "images (k = number planted); planted AUROC: how well the final training scores separate planted "
              "from clean training images; rejection P/R: precision/recall of the images whose training score is "
              "above the IQR fence T (what CoMet down-weights and refinement rejects).", ""]
    summary = summarise(rows)
    header = ["model", "method", "protocol", "noise", "seeds"] + [label for _, label in SHOWN]
    for category in dict.fromkeys(s["category"] for s in summary):
        lines += [f"## {category}", ""] + _summary_section(summary, category)
        lines += [f"### {category}: every metric", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for s in (s for s in summary if s["category"] == category):
            seeds = f"{s['n_seeds']}" + (f" ({s['n_failed']} failed)" if s["n_failed"] else "")
            values = [_cell(s[f"{m}_mean"], s[f"{m}_std"]) for m, _ in SHOWN]
            lines.append("| " + " | ".join([s["model"], s["method"], s["protocol"], f"{s['noise']:g}", seeds]
                                           + values) + " |")
        lines.append("")
    failed = [r for r in rows if r["error"]]
    if failed:
        lines += ["## Failed cells", ""]
        lines += [f"- {r['category']} / {r['model']} / {r['method']} / noise {r['noise']:g} / seed {r['seed']}: "
                  f"{r['error']}" for r in failed]
        lines.append("")
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_report(out_dir: str | Path, rows: list[dict], *, settings: dict | None = None,
                 png: bool = True) -> ReportFiles:
    """Write results.md and, per category, auroc_vs_noise_<category>.html (+ .png when kaleido works)."""
    out = Path(out_dir)
    markdown = out / "results.md"
    text = markdown_report(rows, settings)
    categories = list(dict.fromkeys(r["category"] for r in rows if not r["error"]))
    summary = summarise(rows)
    figures = [noise_figure(summary, c) for c in categories]
    html = [out / f"auroc_vs_noise_{_safe(category)}.html" for category in categories]
    written, error = write_figures(figures, html, png=png)
    if error:
        text += f"\n> Charts: {error}\n"
    markdown.write_text(text)
    return ReportFiles(markdown=markdown, html=html, png=written, png_error=error)

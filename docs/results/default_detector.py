"""The default detector, chosen leave one data set out: rewrite the README's tables between
``<!-- default-detector:begin -->`` and ``<!-- default-detector:end -->``.

    python docs/results/default_detector.py            # rewrite README.md in place
    python docs/results/default_detector.py --check    # exit 1 if README.md is out of date

Raw rows: the memory ensemble's (zero-padded features, its default; plain, + trust and + trust+trim) in
``default_detector_memory.csv``, memory + trust with memories of 5% of the patches in
``default_detector_memory_fraction005.csv``,
SimpleNet's (plain and + trust, "inside" features, its default) in ``cpu_bench_<set>/results.csv``. For each
held-out set the candidate with the highest mean image AUROC over the other two sets' cells (clean and 10 / 20 /
40% ``overlap``, seed means) is picked, and reported on the held-out set; only candidates with all 3 seeds of
every cell compete.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_tables import ROOT, update_readme  # noqa: E402

from comet_studio.workflows.bench.runner import read_results  # noqa: E402

RESULTS = ROOT / "docs/results"
SETS = (("cookies", "cookies"), ("elpv", "ELPV"), ("magnetic_tile", "magnetic tile"))
MEMORY = "default_detector_memory.csv"
CANDIDATES = (  # (model, method, label, raw rows: a file in docs/results, or "simplenet"): the first is the default
    ("memory", "trust", "**memory + trust (new default)**", MEMORY),
    ("memory", "trust+trim", "memory + trust+trim (two trimming rounds)", MEMORY),
    ("memory", "baseline", "memory ensemble, plain", MEMORY),
    ("memory", "trust", "memory + trust, memories of 5% (`--set memory.fraction=0.05`)",
     "default_detector_memory_fraction005.csv"),
    ("simplenet", "baseline", "SimpleNet, plain", "simplenet"),
    ("simplenet", "trust", "SimpleNet + trust (previous default)", "simplenet"),
)
NOISES = (0.0, 0.1, 0.2, 0.4)
METRICS = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("f1_max", "F1-max"),
           ("verdict_precision", "verdict precision"), ("verdict_recall", "verdict recall"),
           ("planted_in_lowest", "copies among the lowest weights"))
BEGIN, END = "<!-- default-detector:begin -->", "<!-- default-detector:end -->"


def _rows(category: str, source: str) -> list[dict]:
    path = RESULTS / (f"cpu_bench_{category}/results.csv" if source == "simplenet" else source)
    if not path.exists():
        return []
    return [r for r in read_results(path) if r["category"] == category and not r["error"]
            and (r["protocol"] == "overlap" or float(r["noise"]) == 0)]


def cells() -> dict[tuple, list[float]]:
    """(category, candidate label, noise, metric) -> the seeds' values."""
    found: dict[tuple, list[float]] = {}
    for category, _ in SETS:
        for model, method, label, source in CANDIDATES:
            for r in _rows(category, source):
                if (r["model"], r["method"]) != (model, method):
                    continue
                for metric, _ in METRICS:
                    found.setdefault((category, label, float(r["noise"]), metric), []).append(float(r[metric]))
    return found


def _mean(values: list[float] | None) -> float:
    values = [v for v in values or [] if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _fmt(values: list[float] | None) -> str:
    values = [v for v in values or [] if not math.isnan(v)]
    if not values:
        return ""
    text = f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")
    return text if len(values) == 3 else f"{text} [{len(values)} seed{'s' * (len(values) > 1)}]"


def _score(found: dict, category: str, label: str) -> float:
    return _mean([_mean(found.get((category, label, n, "image_auroc"))) for n in NOISES])


def _complete(found: dict, label: str) -> bool:
    """Every set's every cell has its 3 seeds: a candidate with fewer is shown, never picked."""
    return all(len(found.get((c, label, n, "image_auroc"), [])) == 3 for c, _ in SETS for n in NOISES)


def loo_lines(found: dict) -> list[str]:
    lines = ["| held out | picked on the other two (mean image AUROC there) | held-out image AUROC, clean / 10 / 20 / "
             "40% | best other candidate there |", "|---|---|---|---|"]
    labels = [c[2] for c in CANDIDATES if _complete(found, c[2])]
    for held, set_label in SETS:
        others = [c for c, _ in SETS if c != held]
        name = max(labels, key=lambda c: np.mean([_score(found, o, c) for o in others]))
        there = np.mean([_score(found, o, name) for o in others])
        values = " / ".join(f"{_mean(found.get((held, name, n, 'image_auroc'))):.3f}" for n in NOISES)
        rival = max((c for c in labels if c != name), key=lambda c: _score(found, held, c))
        rival_values = " / ".join(f"{_mean(found.get((held, rival, n, 'image_auroc'))):.3f}" for n in NOISES)
        lines.append(f"| {set_label} | {name.strip('*')} ({there:.3f}) | {values} | {rival.strip('*')}: "
                     f"{rival_values} |")
    return lines


def set_tables(found: dict) -> list[str]:
    lines: list[str] = []
    for category, label in SETS:
        lines += ["", f"**{label}** (mean ± std over seeds 0, 1, 2; `overlap`; raw rows above):", "",
                  "| detector | metric | clean | 10% | 20% | 40% |", "|---|---|---|---|---|---|"]
        for metric, metric_label in METRICS:
            for _, _, name, _ in CANDIDATES:
                values = [_fmt(found.get((category, name, n, metric))) for n in NOISES]
                if any(values):
                    lines.append(f"| {name} | {metric_label} | " + " | ".join(values) + " |")
    return lines


def rewrite(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    found = cells()
    body = loo_lines(found) + set_tables(found)
    return head + BEGIN + "\n" + "\n".join(body) + "\n" + END + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether README.md is up to date")
    update_readme(rewrite, parser.parse_args().check)


if __name__ == "__main__":
    main()

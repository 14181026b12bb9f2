"""Rewrite the README's "side by side with anomalib" tables from the raw rows of the peer bench.

    python docs/results/peers_tables.py            # rewrite README.md in place
    python docs/results/peers_tables.py --check    # exit 1 if README.md is out of date
    python docs/results/peers_tables.py --merge runs/peers/cookies docs/results/cpu_bench_cookies
                                                   # add a bench folder's peer rows to the committed ones

Reads docs/results/cpu_bench_{cookies,magnetic_tile}/results.csv (our rows and the peer rows, one file per
data set) and peers.csv (both sides' timings from the same run) and replaces what lies between the
``<!-- peers:begin -->`` and ``<!-- peers:end -->`` lines of README.md. Accuracy: mean ± std over the seeds in
results.csv (``[n=1]``: fewer than 3 seeds finished; empty: not run yet). Speed: ratios per cell, measured in one
process (ours and theirs minutes apart), then averaged over the cells of a data set.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from comet_studio.workflows.bench.peers import SHARED, peer_key, write_peer_rows, read_peer_rows
from comet_studio.workflows.bench.report import summarise
from comet_studio.workflows.bench.runner import _row_key, _write_results, read_results
from readme_tables import update_readme  # this folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
SETS = (("Cookies", ROOT / "docs/results/cpu_bench_cookies"), ("Magnetic tile", ROOT / "docs/results/cpu_bench_magnetic_tile"))
ROWS = (  # (model, method, label)
    ("anomalib-patchcore", "baseline", "anomalib PatchCore (coreset 10%)"),
    ("anomalib-padim", "baseline", "anomalib PaDiM"),
    ("simplenet", "trust", "**ours, default** (simplenet + trust)"),
    ("memory", "baseline", "ours, memory ensemble"),
    ("simplenet", "baseline", "ours, plain SimpleNet"),
)
CELLS = ((0.0, "move", "clean"), (0.2, "overlap", "20%"), (0.4, "overlap", "40%"))
METRICS = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"))
SEEDS = 3


def _value(entry: dict | None, metric: str) -> str:
    if entry is None or entry["n_seeds"] == 0 or math.isnan(entry[f"{metric}_mean"]):
        return ""
    text = f"{entry[f'{metric}_mean']:.3f}"
    if entry["n_seeds"] > 1:
        text += f" ± {entry[f'{metric}_std']:.3f}"
    return text + (f" [n={entry['n_seeds']}]" if entry["n_seeds"] < SEEDS else "")


def accuracy_table(folder: Path) -> list[str]:
    summary = {(s["model"], s["method"], s["protocol"], s["noise"]): s
               for s in summarise(read_results(folder / "results.csv"))}
    header = [f"{label} {name}" for _, label in METRICS for _, _, name in CELLS]
    lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for model, method, label in ROWS:
        values = [_value(summary.get((model, method, protocol, noise)), metric)
                  for metric, _ in METRICS for noise, protocol, _ in CELLS]
        lines.append("| " + " | ".join([label, *values]) + " |")
    return lines


def _mean(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    return f"{np.mean(finite):.2f}" if finite else ""


def speed_table(sets: tuple[tuple[str, Path], ...]) -> list[str]:
    lines = ["| data set | peer | cells | fit s, theirs | fit s, ours | **fit speed-up** (min) | img/s, theirs | "
             "img/s, ours | **predict speed-up** (min) |", "|---" * 9 + "|"]
    for name, folder in sets:
        rows = [r for r in read_peer_rows(folder / "peers.csv") if not r["error"]]
        for model, _, label in ROWS[:2]:
            mine = [r for r in rows if r["model"] == model]
            if not mine:
                lines.append(f"| {name} | {label} | 0 | | | | | | |")
                continue
            col = {c: [r[c] for r in mine] for c in ("fit_seconds", "ours_fit_seconds", "fit_speedup",
                                                     "predict_images_per_second", "ours_predict_images_per_second",
                                                     "predict_speedup")}
            lines.append(f"| {name} | {label} | {len(mine)} | {_mean(col['fit_seconds'])} | "
                         f"{_mean(col['ours_fit_seconds'])} | **{_mean(col['fit_speedup'])}** "
                         f"({min(col['fit_speedup']):.2f}) | {_mean(col['predict_images_per_second'])} | "
                         f"{_mean(col['ours_predict_images_per_second'])} | **{_mean(col['predict_speedup'])}** "
                         f"({min(col['predict_speedup']):.2f}) |")
    return lines


def metric_notes(sets: tuple[tuple[str, Path], ...]) -> list[str]:
    """One line per metric where anomalib's own value (on the same predictions) differs from ours by > 0.001."""
    notes = []
    for name, folder in sets:
        ours = {(r["model"], r["protocol"], r["noise"], r["seed"]): r for r in read_results(folder / "results.csv")}
        for peer in (p for p in read_peer_rows(folder / "peers.csv") if not p["error"]):
            row = ours.get((peer["model"], peer["protocol"], peer["noise"], peer["seed"]))
            for metric in SHARED if row else ():
                a, b = row[metric], peer[f"anomalib_{metric}"]
                if not (math.isnan(a) and math.isnan(b)) and not abs(a - b) <= 0.001:
                    notes.append(f"{name} {peer['model']} noise {peer['noise']:g} seed {peer['seed']} {metric}: "
                                 f"ours {a:.4f}, anomalib's {b:.4f}")
    if not notes:
        return ["anomalib's own metrics, computed on the same scores and maps, agree with ours within 0.001 in "
                "every peer cell (image/pixel AUROC, AUPRO, F1-max)."]
    return ["Where anomalib's own metric (same scores and maps) differs from ours by more than 0.001:", "",
            *[f"- {n}" for n in notes]]


def section() -> list[str]:
    lines = []
    for name, folder in SETS:
        lines += [f"**{name}**, `overlap` copies (clean = noise 0; empty: not run yet):", "", *accuracy_table(folder),
                  ""]
    lines += ["Speed, measured in the same run (ours = simplenet + trust fitted end to end from the files; "
              "speed-up above 1 = ours faster; mean over cells, the smallest in brackets):", "",
              *speed_table(SETS), "", *metric_notes(SETS)]
    return lines


def rewrite(text: str) -> str:
    lines = text.split("\n")
    try:
        start, end = lines.index(BEGIN), lines.index(END)
    except ValueError:
        raise SystemExit(f"README.md lacks the lines {BEGIN!r} and {END!r}") from None
    return "\n".join(lines[:start + 1] + section() + lines[end:])


def merge(source: Path, target: Path) -> None:
    """Add the peer rows of the bench folder ``source`` (results.csv rows of anomalib models, peers.csv, peers.md)
    to ``target``, replacing rows with the same key and keeping every other row of ``target``."""
    peers = {r["model"] for r in read_peer_rows(source / "peers.csv")}
    rows = {_row_key(r): r for r in read_results(target / "results.csv")}
    rows.update({_row_key(r): r for r in read_results(source / "results.csv") if r["model"] in peers})
    _write_results(target / "results.csv", list(rows.values()))
    timings = {peer_key(r): r for r in read_peer_rows(target / "peers.csv")}
    timings.update({peer_key(r): r for r in read_peer_rows(source / "peers.csv")})
    write_peer_rows(target / "peers.csv", list(timings.values()))
    (target / "peers.md").write_text((source / "peers.md").read_text())
    print(f"{target}: {len(timings)} peer rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether README.md is up to date")
    parser.add_argument("--merge", nargs=2, type=Path, metavar=("BENCH_DIR", "DOCS_DIR"),
                        help="add BENCH_DIR's peer rows to DOCS_DIR, then stop")
    args = parser.parse_args()
    if args.merge:
        merge(*args.merge)
        return
    update_readme(rewrite, args.check)


if __name__ == "__main__":
    main()

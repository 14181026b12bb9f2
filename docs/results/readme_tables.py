"""Rewrite the README's contamination-bench tables from the raw rows in docs/results/cpu_bench_*/results.csv.

    python docs/results/readme_tables.py            # rewrite README.md in place
    python docs/results/readme_tables.py --check    # exit 1 if README.md is out of date

Each table sits under a fixed heading line in README.md (``TABLES`` below, in order of appearance); the
markdown table right after that heading is replaced, the prose around it is left alone. Values are
mean ± std over the seeds in results.csv, as in the bench's own results.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from comet_studio.workflows.bench.report import _cell, summarise
from comet_studio.workflows.bench.runner import read_results

ROOT = Path(__file__).resolve().parents[2]
MT = ROOT / "docs/results/cpu_bench_magnetic_tile/results.csv"
COOKIES = ROOT / "docs/results/cpu_bench_cookies/results.csv"
ELPV = ROOT / "docs/results/cpu_bench_elpv/results.csv"

# (heading line, results.csv, protocol, metric), in the order the headings appear in README.md.
TABLES = [
    ("**Magnetic tile**, image AUROC, `move`:", MT, "move", "image_auroc"),
    ("`overlap` (the planted copies stay in the test set; noise 0 is the same run as above):", MT, "overlap",
     "image_auroc"),
    ("AUPRO (FPR <= 0.3), `move`:", MT, "move", "aupro"),
    ("AUPRO, `overlap`:", MT, "overlap", "aupro"),
    ("Pixel AUROC, `move`:", MT, "move", "pixel_auroc"),
    ("Share of the planted images among the lowest-weight (for plain training: highest-score) training images, "
     "`move`:", MT, "move", "planted_in_lowest"),
    ("**Cookies**, image AUROC, `move`:", COOKIES, "move", "image_auroc"),
    ("`overlap` (the planted copies stay in the test set; noise 0 is the same run as above):", COOKIES, "overlap",
     "image_auroc"),
    ("AUPRO, `overlap`:", COOKIES, "overlap", "aupro"),
    ("Pixel AUROC, `overlap`:", COOKIES, "overlap", "pixel_auroc"),
    ("Cookies, share of the planted images among the lowest-weight training images, `overlap`:", COOKIES, "overlap",
     "planted_in_lowest"),
    ("**ELPV solar cells** (mono; 200 functional training cells; image labels only), image AUROC, `overlap`:", ELPV,
     "overlap", "image_auroc"),
    ("ELPV, share of the planted cells among the lowest-weight training images, `overlap`:", ELPV, "overlap",
     "planted_in_lowest"),
    ("ELPV, precision of the pass/fail verdict at the run's own threshold (set from training scores only), "
     "`overlap`:", ELPV, "overlap", "verdict_precision"),
    ("ELPV, recall of that verdict, `overlap`:", ELPV, "overlap", "verdict_recall"),
]

ROWS = [  # (model, method, label): the README's row order
    ("patchcore", "baseline", "PatchCore (greedy coreset 10%)"),
    ("memory", "baseline", "memory ensemble (8 x random 10%)"),
    *[(model, method, f"{model}, plain" if method == "baseline" else f"{model} + {method}")
      for model in ("simplenet", "flow")
      for method in ("baseline", "refine", "comet", "comet+prior", "trust", "trust+trim")],
]


def table(csv: Path, protocol: str, metric: str) -> list[str]:
    """Markdown lines: one row per model + method with any value, one column per noise level (noise 0,
    which plants nothing, comes from whichever protocol ran it)."""
    summary = [s for s in summarise(read_results(csv)) if s["n_seeds"] > 0]
    cells = {}
    for s in summary:
        if s["protocol"] == protocol or s["noise"] == 0:
            cells.setdefault((s["model"], s["method"], s["noise"]), s)
    noises = sorted({noise for _, _, noise in cells})
    lines = ["| model | " + " | ".join(f"noise {n:g}" for n in noises) + " |", "|---" * (len(noises) + 1) + "|"]
    for model, method, label in ROWS:
        row = [cells.get((model, method, n)) for n in noises]
        if any(row):
            values = [_cell(c[f"{metric}_mean"], c[f"{metric}_std"]) if c else "" for c in row]
            lines.append("| " + " | ".join([label, *values]) + " |")
    return lines


def rewrite(text: str) -> str:
    lines = text.split("\n")
    position = 0
    for heading, csv, protocol, metric in TABLES:
        try:
            at = lines.index(heading, position)
        except ValueError:
            raise SystemExit(f"README.md has no heading line {heading!r} after line {position + 1}") from None
        start = at + 2  # the heading, a blank line, then the table
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start:end] = table(csv, protocol, metric)
        position = start
    return "\n".join(lines)


def update_readme(rewrite_text, check: bool) -> None:
    """Apply ``rewrite_text`` to README.md; with ``check``, only exit 1 when that would change it."""
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = rewrite_text(old)
    if check:
        sys.exit(0 if new == old else 1)
    readme.write_text(new)
    print("README.md", "unchanged" if new == old else "rewritten")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether README.md is up to date")
    update_readme(rewrite, parser.parse_args().check)


if __name__ == "__main__":
    main()

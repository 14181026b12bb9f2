"""The README's bench tables are the raw rows in docs/results, not hand-edited numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "results" / "readme_tables.py"


def test_readme_tables_match_the_raw_results() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, (
        "README.md's bench tables differ from docs/results/cpu_bench_*/results.csv: "
        f"run `python {SCRIPT.relative_to(SCRIPT.parents[2])}`\n{done.stderr}")


def test_the_default_detector_tables_match_the_raw_results() -> None:
    script = SCRIPT.parent / "default_detector.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, (
        "README.md's default-detector tables differ from docs/results/default_detector_memory.csv and "
        f"cpu_bench_*/results.csv: run `python {script.relative_to(SCRIPT.parents[2])}`\n{done.stderr}")

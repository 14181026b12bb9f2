"""Benchmarks: the contamination grid (category x model x method x noise x seed) and the speed bench.

``run_bench`` plants test anomalies into the training set (``core.data.contaminate``), trains every
model/method on features extracted once per category, evaluates on the remaining test set and writes
results.csv, results.md and plotly charts; a rerun into the same folder only runs the missing cells.
"""

from .features import FeatureStore, load_or_extract
from .grid import METHODS, MODELS, BenchConfig, Cell, build_cells, cell_configs, find_categories
from .report import ReportFiles, markdown_report, summarise, write_report
from .runner import COLUMNS, BenchResult, cap_train, read_results, run_bench, run_cell
from .speed import SpeedConfig, speed_bench, speed_images, speed_markdown

__all__ = [
    "FeatureStore", "load_or_extract", "METHODS", "MODELS", "BenchConfig", "Cell", "build_cells", "cell_configs",
    "find_categories", "ReportFiles", "markdown_report", "summarise", "write_report", "COLUMNS",
    "BenchResult", "cap_train", "read_results", "run_bench", "run_cell", "SpeedConfig", "speed_bench", "speed_images",
    "speed_markdown",
]

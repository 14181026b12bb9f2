"""``comet-studio train-all PLANT_ROOT --out RUNS_DIR``: one run per category folder, resumable, with a summary.

Parses flags into configs and an engine, makes one workflow call (``workflows.plant.train_all``) and prints the table.
"""

from __future__ import annotations

import argparse
import signal

from tqdm import tqdm

from comet_studio.cli.engine import add_engine_options, engine_from_args
from comet_studio.cli.model_options import add_model_options, configs_from_args
from comet_studio.cli.progress import StageBars

__all__ = ["add_train_all_parser", "cmd_train_all"]


def add_train_all_parser(sub) -> None:
    """Register ``train-all``; ``add_model_options`` adds the flags it shares with ``train``."""
    p = sub.add_parser("train-all", help="train every category folder under a plant root (resumable)",
                       description=__doc__)
    p.add_argument("plant_root", help="folder of categories: MVTec-layout categories (train/ + test/) and/or raw "
                                      "image folders, one sub-folder each")
    p.add_argument("--out", required=True, help="runs folder: RUNS_DIR/<category>/ and RUNS_DIR/summary.csv")
    p.add_argument("--categories", default=None, help="comma-separated subset of category folder names")
    add_model_options(p)
    add_engine_options(p, jobs="one task per category (a whole GPU each where the cluster has GPUs)")
    p.set_defaults(func=cmd_train_all)


def cmd_train_all(args: argparse.Namespace) -> int:
    import threading

    from comet_studio.workflows.plant import format_summary, train_all

    model_config, train_config = configs_from_args(args)
    names = tuple(n.strip() for n in args.categories.split(",") if n.strip()) if args.categories else None
    stop = threading.Event()
    bars = StageBars() if args.engine == "local" else None

    def on_interrupt(signum, frame):  # first Ctrl-C: finish the current step, save, stop (local engine)
        if stop.is_set() or args.engine != "local":
            raise KeyboardInterrupt
        tqdm.write("stopping after the current step (Ctrl-C again to abort); a rerun trains what is missing")
        stop.set()

    def on_row(row: dict) -> None:
        tqdm.write(f"{row['category']}: {row['status']}" + (f" ({row['error']})" if row["error"] else ""))

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with engine_from_args(args) as engine:
            result = train_all(args.plant_root, args.out, model_config, train_config, engine=engine,
                               categories=names, progress=bars, stop=stop, on_row=on_row)
    except KeyboardInterrupt:  # Ray tasks were cancelled; summary.csv holds what finished
        print(f"interrupted; {args.out}/summary.csv lists what finished; run the same command again to go on")
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        if bars is not None:
            bars.close()
    print(format_summary(result.rows))
    print(f"summary written to {result.summary_csv}")
    unfinished = result.count("error") + result.count("stopped") + result.count("pending")
    if unfinished:
        print(f"{unfinished} categor{'y is' if unfinished == 1 else 'ies are'} not finished; run the same command "
              f"again to retry {'it' if unfinished == 1 else 'them'} (finished ones are skipped)")
    return 1 if unfinished else 0

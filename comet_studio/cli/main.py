"""``comet-studio``: each subcommand parses its flags, builds configs, makes one core call and reports."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from comet_studio.cli.bench import add_bench_parser
from comet_studio.cli.engine import add_engine_options
from comet_studio.cli.model_options import add_model_options, configs_from_args
from comet_studio.cli.progress import StageBars
from comet_studio.cli.train_all import add_train_all_parser

__all__ = ["main", "build_parser"]


def fresh_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or the first free ``name-2``, ``name-3``... beside it (an empty folder counts as free)."""
    candidate, index = parent / name, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        index += 1
        candidate = parent / f"{name}-{index}"
    return candidate


def default_run_dir(data_dir: str | Path, runs: Path = Path("runs")) -> Path:
    """``runs/<data folder's name>`` (``fresh_folder``): a run without ``--out`` never replaces an earlier
    run's model or overrides (retrain into a run with ``--out`` to keep them)."""
    return fresh_folder(runs, Path(data_dir).resolve().name or "run")


def cmd_train(args: argparse.Namespace) -> int:
    from comet_studio.core.features.cache import StopRequested
    from comet_studio.workflows.run import train_run

    model_config, train_config = configs_from_args(args)
    if args.out is None:
        if args.resume:
            raise ValueError("--resume needs --out: the run folder to continue")
        args.out = str(default_run_dir(args.data_dir))
    stop = threading.Event()
    bars = StageBars()

    def on_interrupt(signum, frame):  # first Ctrl-C: stop cleanly between steps and save the best so far
        if stop.is_set():
            raise KeyboardInterrupt
        tqdm.write("stopping after the current step (Ctrl-C again to abort)...")
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        run = train_run(args.data_dir, args.out, model_config, train_config, progress=bars, stop=stop,
                        resume=args.resume)
    except StopRequested:
        print(f"stopped before the first round finished: nothing new saved in {args.out}", file=sys.stderr)
        return 130  # the shell's code for an interrupted command
    finally:
        signal.signal(signal.SIGINT, previous)
        bars.close()
    if run.resumed_after is not None:
        print(f"resumed after round {run.resumed_after + 1} of {train_config.rounds}")
    result = run.model.result_
    print(f"trained on {len(run.folder)} images ({len(run.folder.skipped)} skipped) on {run.model.device_}"
          f"{' (stopped early)' if run.stopped else ''}")
    for item in run.folder.skipped:
        print(f"  skipped {item.path}: {item.reason}")
    print(f"IQR threshold {result.threshold:.4g}; {int(result.rejected.sum())} rejected; "
          f"{int((result.weights < 1).sum())} down-weighted; best round {result.best_round}")
    t = run.timings
    print(f"features {t['extract_images_per_second']:.1f} img/s; {t['seconds_per_round']:.2f} s/round")
    print(f"run written to {run.run_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from comet_studio.workflows.predict.batch_predict import predict_images

    if args.out is None:  # predictions/<run or model name>, a new folder each time
        source = Path(args.run_dir).resolve()
        args.out = str(fresh_folder(Path("predictions"), (source.stem if source.is_file() else source.name) or "run"))
    with tqdm(desc="predict", unit="img", dynamic_ncols=True) as bar:  # no total: the listing streams
        summary = predict_images(args.run_dir, args.images, args.out, engine=args.engine, address=args.address,
                                 device=args.device, heatmaps=not args.no_heatmaps, fmt=args.format,
                                 batch_size=args.batch_size, workers=args.workers,
                                 progress=lambda done: bar.update(done - bar.n))
    print(f"{summary.scored} image(s) scored; {summary.failed} could not be (their rows give the reason)")
    print(f"wrote {summary.table}" + (f" and heatmaps in {summary.heatmaps}" if summary.heatmaps else ""))
    if not summary.scored:
        print("no images to predict", file=sys.stderr)
        return 2
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from comet_studio.core.io.export import export_model
    from comet_studio.core.model import AnomalyModel

    model = AnomalyModel.load(args.run_dir, device="cpu")
    path = export_model(model, args.out, args.format)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.format})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from comet_studio.core.data import load_mvtec
    from comet_studio.core.evaluation import evaluate_model
    from comet_studio.core.io.atomic import write_json_atomic
    from comet_studio.core.model import AnomalyModel

    model = AnomalyModel.load(args.run_dir, device=args.device)
    dataset = load_mvtec(args.category_dir)
    bars = StageBars()
    try:
        metrics = evaluate_model(model, dataset.test, progress=bars)
    finally:
        bars.close()
    out = Path(args.out) if args.out else Path(args.run_dir) / "metrics.json"
    write_json_atomic(out, metrics)  # strict JSON: a metric that does not apply is null, not NaN
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key:>17}: {value:.4f}" if math.isfinite(value) else f"{key:>17}: n/a")
        else:
            print(f"{key:>17}: {value}")
    print(f"wrote {out}")
    return 0


def cmd_elpv(args: argparse.Namespace) -> int:
    from comet_studio.core.data.elpv import build_elpv_category

    out = build_elpv_category(args.out, cell_type=args.cell_type, n_train=args.train, n_test_good=args.test_good,
                              n_test_defective=args.test_defective, seed=args.seed)
    print(f"wrote {out} (train/good {args.train}, test/good {args.test_good}, "
          f"test/defective {args.test_defective}; {args.cell_type} cells, CC BY-NC-SA 4.0)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comet-studio", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log warnings and details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a detector on a raw folder or an MVTec category")
    p.add_argument("data_dir", help="folder of images (recursive), or an MVTec category root (uses its train/)")
    p.add_argument("--out", default=None,
                   help="run folder to write (default: runs/<folder name>, or runs/<folder name>-2... when taken)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped or killed run in --out after its last completed round (same folder "
                        "and options; refused, saying what changed, otherwise)")
    add_model_options(p)
    p.set_defaults(func=cmd_train)

    add_train_all_parser(sub)  # cli/train_all.py: every category of a plant

    p = sub.add_parser("predict", help="score images with a trained run; CSV + heatmap overlays")
    p.add_argument("run_dir", help="run folder, its model/ folder, or an exported .safetensors or .onnx file")
    p.add_argument("images", nargs="+", help="image files, folders, and/or .txt files listing image paths (one per "
                                             "line; relative paths are relative to the list file)")
    p.add_argument("--out", default=None, help="folder to write predictions.csv and heatmaps/ to (default: "
                                               "predictions/<run name>, or predictions/<run name>-2... when taken)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64, help="images per chunk")
    p.add_argument("--no-heatmaps", action="store_true")
    p.add_argument("--format", default="csv", choices=["csv", "parquet"], help="predictions.csv or .parquet")
    p.add_argument("--workers", type=int, default=None,
                   help="--engine ray: predictor actors (default: one per GPU, else one per CPU)")
    add_engine_options(p, jobs="images stream through Ray Data to a pool of predictor actors")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a deployable model: ONNX (uint8 RGB frames in, scores out), "
                                      "TorchScript, or one .safetensors file")
    p.add_argument("run_dir", help="run folder, its model/ folder, or an exported .safetensors file")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript", "safetensors"])
    p.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="image/pixel AUROC, AUPRO, F1-max on an MVTec-layout test set")
    p.add_argument("run_dir")
    p.add_argument("category_dir")
    p.add_argument("--out", default=None, help="metrics.json path (default: RUN_DIR/metrics.json)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    add_bench_parser(sub)  # cli/bench.py: the grid and --speed benchmarks

    p = sub.add_parser("elpv", help="build the ELPV solar-cell bench category (MVTec layout, image labels) from "
                                    "the installed elpv-dataset package")
    p.add_argument("out", help="category folder to write, e.g. bench/data/elpv")
    p.add_argument("--cell-type", default="mono", choices=["mono", "poly"])
    p.add_argument("--train", type=int, default=200, help="functional cells in train/good")
    p.add_argument("--test-good", type=int, default=100)
    p.add_argument("--test-defective", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_elpv)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

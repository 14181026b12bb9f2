"""``comet-studio bench``: the contamination grid (default) or the speed benchmark (``--speed``).

Parses flags into a ``BenchConfig``/``SpeedConfig``, makes one core call and prints the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from comet_studio.cli.engine import add_engine_options, engine_from_args
from comet_studio.cli.model_options import parse_settings
from comet_studio.cli.progress import StageBars
from comet_studio.core.detectors.registry import DEFAULT_DETECTOR, REGISTRY
from comet_studio.core.io.atomic import write_json_atomic, write_text_atomic
from comet_studio.core.quality import QUALITY
from comet_studio.core.training.presets import DEFAULT_STRATEGY, STRATEGIES

__all__ = ["add_bench_parser", "cmd_bench"]

_SHARED_TILES = Path("shared") / "data" / "magnetic_tile"


def _list(kind: type, what: str):
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list, got {text!r}") from error
        if not values:
            raise argparse.ArgumentTypeError(f"{what}: the list is empty")
        return values
    return parse


def add_bench_parser(sub) -> None:
    """Register ``bench`` on the subparsers object of the main parser (no core import: --help stays fast;
    BenchConfig validates the names)."""
    p = sub.add_parser("bench", help="contamination benchmark (AUROC vs planted noise) or --speed benchmark",
                       description=__doc__)
    p.add_argument("data_root", nargs="?", default=None,
                   help="MVTec-layout root (many categories) or one category folder; for --speed any image "
                        "folder (default: ../shared/data/magnetic_tile when present)")
    p.add_argument("--out", default=None, help="output folder (required for the grid; optional for --speed)")
    p.add_argument("--categories", type=_list(str, "--categories"), default=None, help="e.g. bottle,cable")
    p.add_argument("--noise", type=_list(float, "--noise"), default=(0.0, 0.1, 0.2, 0.3, 0.4),
                   help="contamination ratios: planted anomalies / clean training images")
    p.add_argument("--methods", type=_list(str, "--methods"), default=("baseline", "comet", "trust"),
                   help=f"comma-separated strategies (core/training/presets.py): {', '.join(STRATEGIES)}; "
                        f"{DEFAULT_STRATEGY} is the default strategy")
    p.add_argument("--models", type=_list(str, "--models"), default=(DEFAULT_DETECTOR,),
                   help=f"comma-separated detectors: {', '.join(REGISTRY)}")
    p.add_argument("--seeds", type=_list(int, "--seeds"), default=(0,))
    p.add_argument("--protocol", default="move", choices=["move", "overlap"],
                   help="move: planted images leave the test set; overlap: they stay in it too")
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--backbones", type=_list(str, "--backbones"),
                   default=("efficientnet-lite0", "efficientnet-lite2", "wide_resnet50_2"), help="--speed only")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--tta", default="", metavar="VIEWS", help="test-time views of every model, e.g. hflip,rot90")
    p.add_argument("--augment", default="", metavar="VIEWS", help="training views of every model, e.g. rot90,hflip")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a model setting of every cell, repeatable (JSON values): e.g. --set simplenet.noise_std=0.5 "
                        "--set 'backbone.layers=[\"block4\",\"block10\",\"block15\"]'")
    p.add_argument("--rounds", type=int, default=None, help="training rounds (default: TrainConfig's)")
    p.add_argument("--steps", type=int, default=None, help="gradient steps per round (default: TrainConfig's)")
    p.add_argument("--max-train", type=int, default=None,
                   help="cap the clean training images (one fixed seeded subset) for quick looks")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-png", action="store_true", help="write the charts as HTML only")
    p.add_argument("--peers", type=_list(str, "--peers"), default=(),
                   help="also run other tools on every cell, timed in the same run: anomalib (its PatchCore and "
                        "PaDiM; needs the extra: pip install -e \".[peers]\")")
    p.add_argument("--speed", action="store_true", help="time feature extraction, training and inference")
    p.add_argument("--speed-images", type=int, default=32, help="--speed: real images to time on")
    p.add_argument("--speed-skip-exact", action="store_true",
                   help="--speed: do not also time the memory's exact float32 search (slow on a CPU)")
    p.add_argument("--speed-presets", type=_list(str, "--speed-presets"), default=tuple(QUALITY),
                   help=f"--speed: the --quality presets to time end to end (default: {','.join(QUALITY)})")
    add_engine_options(p, jobs="one task per category's feature extraction, then one per grid cell (grid only)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.speed and (args.engine != "local" or args.address):
        raise ValueError("--engine/--address apply to the benchmark grid; --speed times this machine")
    return _speed(args) if args.speed else _grid(args)


def _grid(args: argparse.Namespace) -> int:
    from comet_studio.workflows.bench import BenchConfig, run_bench

    if args.data_root is None or args.out is None:
        raise ValueError("the benchmark grid needs DATA_ROOT and --out DIR (or use --speed)")
    config = BenchConfig(noise=args.noise, methods=args.methods, models=args.models, seeds=args.seeds,
                         categories=args.categories, protocol=args.protocol, backbone=args.backbone,
                         image_size=args.image_size, rounds=args.rounds, steps_per_round=args.steps,
                         max_train=args.max_train, device=args.device, tta=args.tta, augment=args.augment,
                         model_settings=tuple(parse_settings(args.settings)))
    if args.peers:  # before any work: a missing extra says how to install it
        from comet_studio.workflows.bench.peers import check_peers, run_peers

        check_peers(args.peers)
    bars = StageBars()
    try:
        with engine_from_args(args) as engine:  # checks --address too
            # --engine local keeps the sequential loop (features stay in memory between cells).
            result = run_bench(args.data_root, args.out, config, progress=bars, png=not args.no_png,
                               engine=engine if args.engine == "ray" else None)
        if args.peers:  # in this process, after our cells; rewrites results.md and writes peers.md
            run_peers(args.data_root, args.out, config, peers=args.peers, progress=bars, png=not args.no_png)
    finally:
        bars.close()
    print(result.report.markdown.read_text())
    print(f"{result.computed} cell(s) run now, {result.reused} reused from {result.out_dir / 'results.csv'}, "
          f"{result.failed} failed; features extracted now for {result.extracted} image(s)")
    if result.failed:
        print("failed cells keep their error in results.csv and results.md; a rerun into --out retries them")
    if args.peers:
        print((Path(args.out) / "peers.md").read_text())
    print(f"charts: {', '.join(str(p) for p in result.report.html + result.report.png) or 'none'}")
    if result.report.png_error:
        print(f"PNG charts not written: {result.report.png_error}")
    return 1 if result.failed else 0


def _default_speed_root() -> Path:
    for base in (Path.cwd().parent, Path(__file__).resolve().parents[2].parent):
        if (base / _SHARED_TILES).is_dir():
            return base / _SHARED_TILES
    raise ValueError(f"no images given and ../{_SHARED_TILES} not found: pass an image folder to --speed")


def _speed(args: argparse.Namespace) -> int:
    import torch

    from comet_studio.workflows.bench import SpeedConfig, speed_bench, speed_images, speed_markdown

    config = SpeedConfig(backbones=args.backbones, image_size=args.image_size, device=args.device,
                         n_images=args.speed_images, rounds=args.rounds, steps_per_round=args.steps,
                         exact_reference=not args.speed_skip_exact, presets=args.speed_presets)
    root = Path(args.data_root) if args.data_root else _default_speed_root()
    images = speed_images(root, config.n_images)
    print(f"speed bench on {len(images)} images from {root}; requested device {args.device}, "
          f"{torch.get_num_threads()} torch thread(s), image size {config.image_size}")
    bars = StageBars()
    try:
        result = speed_bench(images, config, progress=bars)
    finally:
        bars.close()
    text = speed_markdown(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "speed.json", result)
        write_text_atomic(out / "speed.md", text)
        print(f"wrote {out / 'speed.json'} and {out / 'speed.md'}")
    return 0

"""The flags ``train`` and ``train-all`` share (detector, backbone, strategy, ``--set``) and the one function that
turns them into configs. A module of its own so that both commands import it and neither imports the other.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from comet_studio.core.config import BACKBONES, TEST_VIEWS
from comet_studio.core.detectors.registry import DEFAULT_DETECTOR, REGISTRY, detector_names
from comet_studio.core.quality import DEFAULT_QUALITY, QUALITY, quality_configs
from comet_studio.core.training.presets import DEFAULT_STRATEGY, STRATEGIES, strategy_config

__all__ = ["add_model_options", "configs_from_args"]


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_DETECTOR, choices=list(REGISTRY),
                   help=f"detector head ({' and '.join(detector_names(trains=False))} are training-free)")
    p.add_argument("--quality", default=DEFAULT_QUALITY, choices=list(QUALITY),
                   help="speed/strength preset (core/quality.py): "
                        + "; ".join(f"{name}: {q.summary}" for name, q in QUALITY.items())
                        + ". --backbone, --image-size and --rounds override it")
    p.add_argument("--backbone", default=None, choices=list(BACKBONES), help="default: the --quality preset's")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input size (multiple of 32; default: the --quality preset's)")
    p.add_argument("--tta", default="", metavar="VIEWS",
                   help=f"test-time views, comma-separated ({','.join(TEST_VIEWS)}): each image is also scored "
                        "through them and the aligned maps averaged; one backbone pass more per view")
    p.add_argument("--augment", default="", metavar="VIEWS",
                   help="training views, same names: e.g. rot90,rot180,rot270,hflip for parts that come in any "
                        "orientation; one backbone pass more per training image and view")
    p.add_argument("--epochs", "--rounds", dest="rounds", type=int, default=None, help="training rounds")
    p.add_argument("--steps", type=int, default=None, help="gradient steps per round")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    strategy = p.add_mutually_exclusive_group()
    strategy.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=list(STRATEGIES),
                          help=f"training strategy (core/training/presets.py; default {DEFAULT_STRATEGY})")
    strategy.add_argument("--baseline", action="store_true", help="plain training: no SCL, no meta, no lambda(Sigma) "
                                                                  "(= --strategy baseline)")
    strategy.add_argument("--refine", action="store_true", help="iterative refinement: hard IQR rejection "
                                                                "(= --strategy refine)")
    p.add_argument("--no-scl", action="store_true", help="CoMet without soft confidence weights")
    p.add_argument("--no-meta", action="store_true", help="CoMet without meta-learning")
    p.add_argument("--no-adaptive-l2", action="store_true", help="CoMet with a fixed L2 term")
    p.add_argument("--iqr-k", type=float, default=1.5, help="IQR threshold T = Q3 + k * IQR")
    p.add_argument("--prior", default=None, choices=["none", "memory"],
                   help="memory (default): a contamination-robust memory ensemble's leave-one-out opinion decides "
                        "which images and patches train the head before any gradient step; none: CoMet alone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp16-cache", action="store_true", help="keep cached features in half precision")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any detector or training setting, repeatable: e.g. --set flow.n_blocks=8 "
                        "--set simplenet.noise_std=0.5 --set comet.task_size=8 --set batch_size=16 "
                        "(sections: backbone, simplenet, flow, memory, patchcore, comet, trust; see core/config.py)")


def configs_from_args(args: argparse.Namespace):
    """(ModelConfig, TrainConfig) from parsed flags; the only place flags become configs. The strategy
    (``--strategy``, ``--baseline``, ``--refine``) gives the CoMet, prior and trust settings; ``--no-*`` switch
    CoMet parts off on top of it, ``--iqr-k`` and ``--prior`` replace its values."""
    from comet_studio.core.config import BackboneConfig, ModelConfig, config_to_dict

    model, base = quality_configs(getattr(args, "quality", DEFAULT_QUALITY), ModelConfig(detector=args.model))
    backbone = {k: v for k, v in (("name", args.backbone), ("image_size", args.image_size)) if v is not None}
    model = replace(model, backbone=BackboneConfig(**{**config_to_dict(model.backbone), **backbone}),
                    tta=getattr(args, "tta", ""), augment=getattr(args, "augment", ""))
    extra = {k: v for k, v in (("rounds", args.rounds), ("steps_per_round", args.steps)) if v is not None}
    base = replace(base, device=args.device, seed=args.seed, fp16_cache=args.fp16_cache, **extra)
    train = strategy_config(_strategy_name(args), base)
    comet = replace(train.comet, soft_weights=train.comet.soft_weights and not args.no_scl,
                    meta=train.comet.meta and not args.no_meta,
                    adaptive_l2=train.comet.adaptive_l2 and not args.no_adaptive_l2, iqr_k=args.iqr_k)
    train = replace(train, comet=comet, prior=train.prior if args.prior is None else args.prior)
    return _apply_settings(model, train, getattr(args, "settings", []))


def _strategy_name(args: argparse.Namespace) -> str:
    if args.baseline:
        return "baseline"
    if args.refine:
        return "refine"
    return getattr(args, "strategy", DEFAULT_STRATEGY)


def _apply_settings(model, train, items: list[str]):
    """``--set SECTION.KEY=VALUE`` items onto the model config (detector and backbone settings) or the
    training config (``comet.*`` and top-level training settings). Values are JSON (8, 0.5, true, [1, 2]);
    anything else is taken as text."""
    from comet_studio.core.config import config_to_dict, with_settings

    model_keys = set(config_to_dict(model))
    for_model, for_train = {}, {}
    for key, value in parse_settings(items):
        (for_model if key.split(".")[0] in model_keys else for_train)[key] = value
    return with_settings(model, for_model), with_settings(train, for_train)


def parse_settings(items: list[str]) -> list[tuple[str, object]]:
    """``SECTION.KEY=VALUE`` items as (key, value) pairs; values are JSON (8, 0.5, true, ["a", "b"]),
    anything else is taken as text."""
    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. flow.n_blocks=8")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        pairs.append((key.strip(), value))
    return pairs

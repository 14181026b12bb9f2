"""``--engine local|ray [--address ADDR]``: the flags every scale-out command shares, and the engine they ask for."""

from __future__ import annotations

import argparse

__all__ = ["add_engine_options", "engine_from_args"]


def add_engine_options(p: argparse.ArgumentParser, *, jobs: str) -> None:
    """Register ``--engine`` and ``--address`` on a subcommand; ``jobs`` says what runs in parallel."""
    group = p.add_argument_group("scaling out")
    group.add_argument("--engine", default="local", choices=["local", "ray"],
                       help=f"local: in this process (default); ray: {jobs} on a Ray cluster "
                            f'(needs: pip install "comet-studio[ray]")')
    group.add_argument("--address", default=None,
                       help="Ray cluster to join, e.g. auto, HEAD_IP:6379 or ray://HEAD_IP:10001 (default: start a "
                            "local cluster on this machine's CPUs/GPUs); inputs and outputs must be on storage "
                            "every node sees at the same path")


def engine_from_args(args: argparse.Namespace):
    """The engine for ``--engine``/``--address``: a context manager (a local Ray cluster started here is shut
    down on exit)."""
    from comet_studio.engines import make_engine

    return make_engine(args.engine, address=args.address)

#!/usr/bin/env python
"""Start CoMet Studio: ``python launch.py`` then open http://127.0.0.1:7860."""

from __future__ import annotations

import argparse
import logging


def _credentials(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected user:password")
    return user, password


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CoMet Studio: train and inspect anomaly detectors in a browser.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share-auth", type=_credentials, metavar="USER:PASS",
                        help="require this login (use it whenever --host is not 127.0.0.1)")
    parser.add_argument("--runs-dir", default="runs", help="where runs, exports and the image cache are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.host not in ("127.0.0.1", "localhost") and args.share_auth is None:
        logging.getLogger("launch").warning("serving on %s without a password: anyone on the network can use "
                                            "the app; add --share-auth user:pass", args.host)
    from comet_studio.app import launch_app

    launch_app(args.runs_dir, host=args.host, port=args.port, auth=args.share_auth)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Start CoMet Studio: ``python launch.py`` then open http://127.0.0.1:7860."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from comet_studio.app.context import SCAN_DEPTH, SCAN_FILES


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
    parser.add_argument("--share-auth", type=_credentials, metavar="USER:PASS", action="append",
                        help="require a login (repeat for several users; each sees only their own runs); use it "
                             "whenever --host is not 127.0.0.1")
    parser.add_argument("--admin", action="append", default=[], metavar="USER",
                        help="a --share-auth user who sees every user's runs (repeatable)")
    parser.add_argument("--data-root", action="append", metavar="DIR",
                        help="a folder clients may read images from, sub-folders included (repeatable); default "
                             "on 127.0.0.1: your home and the current folder; on any other host: none, uploads "
                             "only")
    parser.add_argument("--scan-max-files", type=int, default=SCAN_FILES, metavar="N",
                        help=f"a folder scan stops after N files (default {SCAN_FILES:,})")
    parser.add_argument("--scan-max-depth", type=int, default=SCAN_DEPTH, metavar="N",
                        help=f"a folder scan enters at most N folder levels (default {SCAN_DEPTH})")
    parser.add_argument("--runs-dir", default="runs", help="where runs, exports and the image cache are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _check(parser, args)
    from comet_studio.app import launch_app

    launch_app(args.runs_dir, host=args.host, port=args.port, auth=args.share_auth, data_roots=args.data_root,
               admins=args.admin, scan_files=args.scan_max_files, scan_depth=args.scan_max_depth)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse contradictory options; warn about an open network studio."""
    log = logging.getLogger("launch")
    users = [user for user, _ in args.share_auth or []]
    if len(set(users)) != len(users):
        parser.error("--share-auth: each user name once")
    unknown = [name for name in args.admin if name not in users]
    if unknown:
        parser.error(f"--admin {unknown[0]}: not a --share-auth user")
    missing = [d for d in args.data_root or [] if not Path(d).expanduser().is_dir()]
    if missing:
        parser.error(f"--data-root {missing[0]}: no such folder")
    if args.scan_max_files < 1 or args.scan_max_depth < 0:
        parser.error("--scan-max-files must be at least 1 and --scan-max-depth at least 0")
    if args.host not in ("127.0.0.1", "localhost") and not users:
        log.warning("serving on %s without a password: anyone on the network can use the app; add --share-auth "
                    "user:pass", args.host)
    if args.host not in ("127.0.0.1", "localhost") and args.data_root is None:
        log.warning("serving on %s without --data-root: clients can use uploads (and the demo folder) only; "
                    "add --data-root DIR to open a folder of images", args.host)


if __name__ == "__main__":
    main()

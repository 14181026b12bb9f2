"""The progress callbacks core calls, defined once. Shells turn them into bars (``cli/progress.py``) or a job's
live status (``app/jobs.py``); core never knows which."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "CountProgress"]

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: ``done`` of ``total`` in the named stage ("features", "rounds", "cells", ...)."""

CountProgress = Callable[[int], None]
"""``progress(done)`` when the total is unknown while the work streams (rows written, files scanned so far)."""

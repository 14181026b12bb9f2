"""Folder scans as the app runs them: always bounded (the tabs pass ``AppContext.scan_bounds``, never the
unbounded default), so a client naming a huge tree or a network mount gets a message instead of a busy server.
The listing itself is the prediction pipeline's (``workflows/predict/listing.py``)."""

from __future__ import annotations

from ..workflows.predict.listing import listed_images

__all__ = ["SCAN_QUEUE", "SCAN_SLOTS", "listed_images"]

SCAN_QUEUE = "scan"  # the concurrency group of every event that walks a folder (Data tab scans, Test tab predict)
SCAN_SLOTS = 2

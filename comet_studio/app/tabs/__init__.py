"""One module per tab, each with ``create_ui(ctx)`` (components) and ``bind_events(ctx)`` (handlers)."""

from . import data, export, inspect, landscape, test, train

TABS = (data, train, inspect, landscape, test, export)

__all__ = ["TABS"]

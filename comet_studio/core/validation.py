"""The checks every settings class runs when built: a failed one is a ValueError that names the setting."""

from __future__ import annotations

from typing import Any

__all__ = ["check", "check_range", "check_at_least"]


def check(condition: bool, message: str) -> None:
    """A ValueError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


def check_range(name: str, value: float, low: float, high: float) -> None:
    """``value`` (the setting ``name``) lies in [low, high]."""
    check(low <= value <= high, f"{name} must be in [{low}, {high}], got {value!r}")


def check_at_least(config: Any, **lowest: float) -> None:
    """Each named field of ``config`` is at least its value, checked in the order given."""
    for name, low in lowest.items():
        value = getattr(config, name)
        check(value >= low, f"{name} must be >= {low}, got {value!r}")

"""What every engine yields for a job (``TaskOutcome``) and how a failed job's error reads (``describe_error``).

Kept apart from ``engine.py`` so that ``ray_engine.py`` needs only this, and ``engine.make_engine`` can import
``ray_engine`` without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["TaskOutcome", "describe_error"]

R = TypeVar("R")


@dataclass(frozen=True)
class TaskOutcome(Generic[R]):
    """One finished job: ``value`` when it returned, else ``error`` (``Type: message``)."""

    index: int  # position of the item in the submitted sequence
    value: R | None
    error: str | None


def describe_error(error: BaseException) -> str:
    """``Type: message`` on one line, for a CSV cell."""
    return f"{type(error).__name__}: {error}".replace("\n", " ").strip()

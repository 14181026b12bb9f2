"""How a caller steers a fit besides the data: where progress goes, when to stop, what to do after each
round. One object, handed through the trainer instead of four separate arguments."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..progress import Progress

if TYPE_CHECKING:
    from .result import RoundEvent
    from .state import TrainerState

__all__ = ["TrainingControl"]


@dataclass(frozen=True, kw_only=True)
class TrainingControl:
    """Every field is optional; an empty ``TrainingControl()`` runs silently to the end.

    - ``progress(stage, done, total)``: "features", "trust", "memory pass N" and "rounds".
    - ``stop``: when set, the fit finishes the step it is in and returns the best model so far.
    - ``on_round(event)``: after every round (a ``RoundEvent``).
    - ``on_state(state)``: after every completed round of a trained head, a ``TrainerState`` to resume from.
    """

    progress: Progress | None = None
    stop: threading.Event | None = None
    on_round: Callable[[RoundEvent], None] | None = None
    on_state: Callable[[TrainerState], None] | None = None

    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def stage(self, name: str) -> Callable[[int, int], None] | None:
        """``progress`` for one stage as a ``(done, total)`` callback; None when nobody listens."""
        progress = self.progress
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    def round_finished(self, event: RoundEvent) -> None:
        if self.progress is not None:
            self.progress("rounds", event.round + 1, event.rounds)
        if self.on_round is not None:
            self.on_round(event)

    def checkpoint(self, capture: Callable[[], TrainerState]) -> None:
        """Hand ``capture()`` to ``on_state``; the copy is only made when someone keeps it."""
        if self.on_state is not None:
            self.on_state(capture())

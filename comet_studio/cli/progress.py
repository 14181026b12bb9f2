"""``StageBars``: the terminal's view of the core's ``progress(stage, done, total)`` callback, one tqdm bar a stage.

Every command that reports progress (train, train-all, evaluate, bench) uses this one class.
"""

from __future__ import annotations

from tqdm import tqdm

__all__ = ["StageBars"]

# What each stage counts (a numbered stage, "memory pass 2", by its name without the number); any other
# stage counts rounds (or passes).
_UNITS = {"features": "img", "cells": "cell", "trust": "img", "memory pass": "img"}


class StageBars:
    """tqdm bars keyed by stage name, fed by the core's ``progress(stage, done, total)`` callback.

    A stage whose total changes or whose count goes back (the next category's extraction) starts a fresh
    bar; a stage that reaches its total closes its bar, so its clock stops (the features bar would otherwise
    keep running through training)."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            unit = _UNITS.get(stage.rstrip("0123456789 "), "round")
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, dynamic_ncols=True, initial=done)
        bar.update(done - bar.n)
        if done >= total:
            self.bars.pop(stage).close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

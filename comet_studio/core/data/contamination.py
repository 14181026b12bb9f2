"""Planted contamination for evaluation: move (or copy) test anomalies into the training set, seeded."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .mvtec import LabelledImage, LabelledSet

__all__ = ["ContaminatedSet", "contaminate"]


@dataclass(frozen=True)
class ContaminatedSet:
    """Training paths with planted anomalies, the test set left after the move, and what was planted."""

    train: tuple[str, ...]
    test: tuple[LabelledImage, ...]
    planted: tuple[str, ...]
    ratio: float
    protocol: str
    seed: int

    def to_json(self, path: str | Path) -> None:
        data = {"ratio": self.ratio, "protocol": self.protocol, "seed": self.seed, "planted": list(self.planted),
                "n_train": len(self.train), "n_test": len(self.test)}
        Path(path).write_text(json.dumps(data, indent=2))


def contaminate(dataset: LabelledSet, ratio: float, *, seed: int = 0,
                protocol: Literal["move", "overlap"] = "move") -> ContaminatedSet:
    """Plant ``round(ratio * n_train)`` test anomalies into the training set.

    ``move`` (no-overlap, as SoftPatch): the planted images leave the test set. ``overlap``: they stay in
    the test set too (the detector sees copies of test defects during training: the harder case).
    The anomaly count is capped by what the test set holds; the selection is seeded.
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"contamination ratio must be in [0, 1], got {ratio!r}")
    if protocol not in ("move", "overlap"):
        raise ValueError(f"protocol must be 'move' or 'overlap', got {protocol!r}")
    anomalies = [item for item in dataset.test if item.label == 1]
    wanted = int(math.floor(ratio * len(dataset.train) + 0.5))
    if protocol == "move":
        # Keep at least a quarter of the anomalies for testing.
        wanted = min(wanted, (3 * len(anomalies)) // 4)
    wanted = min(wanted, len(anomalies))
    planted = random.Random(seed).sample(anomalies, wanted)
    planted_paths = {item.path for item in planted}
    test = dataset.test if protocol == "overlap" else tuple(i for i in dataset.test if i.path not in planted_paths)
    return ContaminatedSet(
        train=tuple(dataset.train) + tuple(sorted(planted_paths)),
        test=tuple(test), planted=tuple(sorted(planted_paths)), ratio=ratio, protocol=protocol, seed=seed,
    )

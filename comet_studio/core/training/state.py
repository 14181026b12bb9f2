"""The trainer's state after a completed round: enough to continue exactly as if training had not stopped.

``CoMetTrainer.fit(on_state=...)`` hands one out after every completed round; ``fit(resume=state)`` takes it
back. The file format (safetensors + JSON, no pickle) lives in ``core/io/trainer_state.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .regularization import AdaptiveL2
from .weighting import SampleWeights

__all__ = ["TrainerState", "capture_state", "restore_state"]

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainerState:
    """Everything round ``round + 1`` depends on. Tensors are CPU copies, safe to keep and to save.

    ``best_*`` describe the selected round so far: its head weights and the IQR threshold and median of its
    training scores (the post-processing a model saved now would carry). ``rng`` holds the states of the
    trainer's generators (``"sampling"``, ``"noise"``): training draws from nothing else (state files of
    earlier versions also hold torch's global one, ``"torch"``, which is no longer read).
    """

    round: int
    n_samples: int
    head: Tensors
    best_head: Tensors
    best_loss: float
    best_round: int
    best_threshold: float
    best_median: float
    anchor: list[torch.Tensor]
    optimiser: dict[int, dict[str, torch.Tensor | float]]
    l2_value: float
    l2_history: list[tuple[float, float]]
    weights: SampleWeights
    rng: Tensors
    history: list[dict]


def _cpu(tensors: Mapping[str, torch.Tensor]) -> Tensors:
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}


def capture_state(*, round: int, n_samples: int, head: torch.nn.Module, best: tuple[float, int, Tensors],
                  best_post: tuple[float, float], anchor: list[torch.Tensor], optimiser: torch.optim.Optimizer,
                  l2: AdaptiveL2, weights: SampleWeights, generators: Mapping[str, torch.Generator],
                  history: list[dict]) -> TrainerState:
    """A snapshot of the trainer's live objects (copied, so training can go on changing them)."""
    optimiser_state = {int(index): {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v
                                    for k, v in values.items()}
                       for index, values in optimiser.state_dict()["state"].items()}
    rng = {name: generator.get_state() for name, generator in generators.items()}
    return TrainerState(
        round=round, n_samples=n_samples, head=_cpu(head.state_dict()), best_head=_cpu(best[2]),
        best_loss=float(best[0]), best_round=best[1], best_threshold=float(best_post[0]),
        best_median=float(best_post[1]), anchor=[a.detach().to("cpu", copy=True) for a in anchor],
        optimiser=optimiser_state, l2_value=float(l2.value), l2_history=[tuple(p) for p in l2.history],
        weights=SampleWeights(weights.weights.copy(), weights.rejected.copy(), weights.threshold, weights.median),
        rng=rng, history=[dict(h) for h in history])


def restore_state(state: TrainerState, *, n_samples: int, head: torch.nn.Module, anchor: list[torch.Tensor],
                  optimiser: torch.optim.Optimizer, l2: AdaptiveL2,
                  generators: Mapping[str, torch.Generator]) -> None:
    """Put ``state`` back into freshly built trainer objects (the head, its L2 anchor, the optimiser, the
    adaptive L2 term and the generators). Raises ``ValueError`` when it belongs to another training set
    or head."""
    if state.n_samples != n_samples:
        raise ValueError(f"the saved trainer state is for {state.n_samples} training images, not {n_samples}; "
                         f"resume with the same images")
    if len(state.anchor) != len(anchor):
        raise ValueError(f"the saved trainer state has {len(state.anchor)} trainable tensors, this head "
                         f"{len(anchor)}; resume with the same model settings")
    try:
        head.load_state_dict(state.head, strict=True)
        with torch.no_grad():
            for target, saved in zip(anchor, state.anchor, strict=True):
                target.copy_(saved)
    except RuntimeError as error:  # torch reports missing/unexpected keys or shapes this way
        raise ValueError(f"the saved trainer state does not fit this head ({error}); resume with the same "
                         f"model settings") from error
    fresh = optimiser.state_dict()
    optimiser.load_state_dict({"state": state.optimiser, "param_groups": fresh["param_groups"]})
    l2.value = state.l2_value
    l2.history.clear()
    l2.history.extend(state.l2_history)
    for name, generator in generators.items():
        generator.set_state(state.rng[name])

"""First-order meta-learning (Reptile) over tasks drawn from the weighted training set."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import CoMetConfig

__all__ = ["MetaLearner"]


class MetaLearner:
    """One Reptile task per ``step``: adapt a copy of the parameters on the support set, measure the query
    loss (the validation loss: the query images are unseen by the adapted model), take one more step on the
    query set, then move the original parameters towards the adapted ones:

        theta <- theta + meta_step * (theta_adapted - theta)

    (towards, not away: the public reference code had this sign backwards). The inner optimiser is shared
    across tasks (Adam), as in the Reptile paper's implementation; its moments smooth the inner steps.
    """

    def __init__(self, config: CoMetConfig, optimiser: torch.optim.Optimizer) -> None:
        self.config = config
        self.optimiser = optimiser

    def step(self, params: list[torch.nn.Parameter], task: torch.Tensor,
             loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
        n_support = max(1, min(len(task) - 1, int(round(self.config.support_fraction * len(task)))))
        support, query = task[:n_support], task[n_support:]
        start = [p.detach().clone() for p in params]
        support_losses = []
        for _ in range(self.config.inner_steps):
            self.optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(support)
            loss.backward()
            self.optimiser.step()
            support_losses.append(float(loss.detach()))
        self.optimiser.zero_grad(set_to_none=True)
        query_loss = loss_fn(query)
        query_loss.backward()
        self.optimiser.step()
        with torch.no_grad():
            for p, p0 in zip(params, start, strict=True):
                p.copy_(p0 + self.config.meta_step * (p - p0))
        return sum(support_losses) / len(support_losses), float(query_loss.detach())

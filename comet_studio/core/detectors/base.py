"""The contract every detector head satisfies, so the CoMet trainer wraps any of them unchanged."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["DetectorHead", "top_k_mean"]


def top_k_mean(patch_scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Image score: mean of the top ``fraction`` of patch scores (at least one patch) per image.

    A top-1% mean is steadier than the max (one noisy patch does not decide) and still local enough
    for small defects. ``fraction=0`` gives the max.
    """
    flat = patch_scores.flatten(1)
    # int(): a traced export (TorchScript) sees the size as a tensor; the patch grid is fixed, so k is too.
    k = max(1, int(round(fraction * int(flat.shape[1]))))
    return flat.topk(k, dim=1).values.mean(dim=1)


class DetectorHead(nn.Module):
    """A detector on cached patch features (B, D, h, w). Higher scores = more anomalous, everywhere.

    - ``__init__(dim, config, *, generator=None)``: any random initial state is drawn from ``generator``
      (a ``torch.Generator``; a fixed seed when None), never from torch's global RNG.

    - ``fit_statistics(features)``: fixed statistics of the training features (called once before training).
    - ``trainable_parameters()``: the single list used by the optimiser, Reptile and the L2 term
      (floating tensors that require grad; never FrEIA's fixed permutations).
    - ``per_sample_loss(features, generator, patch_weights)``: one loss per image, so confidence weights
      multiply it; ``patch_weights`` (B, h, w) in [0, 1] scale each patch's share (0: the patch teaches nothing).
    - ``patch_scores(features)``: (B, h, w) anomaly scores per patch.
    - Training-free heads (``trainable = False``, e.g. patch memories) are fitted by ``fit_statistics`` alone
      and implement ``training_scores(features, *, progress=None)``: the training images' scores, each image
      scored without its own contribution (a memory holding an image's patches would otherwise score it ~0).
    - ``data_sized_buffers``: names of buffers whose shape depends on the training data; a checkpoint may
      hold another size for them (the head resizes them when loading).
    """

    trainable: bool = True
    top_k: float = 0.01
    data_sized_buffers: tuple[str, ...] = ()

    def fit_statistics(self, features: torch.Tensor) -> None:
        """Default: nothing to fit."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad and p.is_floating_point()]

    def per_sample_loss(self, features: torch.Tensor, generator: torch.Generator | None = None,
                        patch_weights: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_scores(self, features: torch.Tensor, *,
                        progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(N,) leave-one-out image scores of the ``features`` given to ``fit_statistics`` (training-free heads);
        ``progress(done, total)`` is called as the pass goes, when it takes long."""
        raise NotImplementedError(f"{type(self).__name__} is trained: score it with image_scores")

    def image_scores(self, features: torch.Tensor) -> torch.Tensor:
        return top_k_mean(self.patch_scores(features), self.top_k)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.patch_scores(features)

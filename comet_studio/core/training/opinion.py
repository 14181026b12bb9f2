"""The robust first opinion: leave-one-out scores of a sparse memory ensemble, before any gradient step.

A memory that holds none of an image's own patches scores a copied defect like an unseen one, whatever
the rest of the folder holds; a head trained on the folder has already half-learned it. So the memory's
opinion decides which images are out (an image fence) and which patches of the kept images teach nothing
(a patch fence); the trainer then fits on what is left (``trainer.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MemoryConfig, TrustConfig
from ..detectors.base import top_k_mean
from ..detectors.memory import MemoryHead
from .weighting import robust_fence

__all__ = ["MemoryOpinion", "memory_opinion", "fenced_out"]


def fenced_out(image_scores: np.ndarray, config: TrustConfig) -> np.ndarray:
    """(N,) bool: images above the image fence (``config.fence`` rule, ``config.k``)."""
    scores = np.asarray(image_scores, dtype=np.float64)
    fence, _ = robust_fence(scores, config.fence, config.k)
    return scores > fence


@dataclass(frozen=True)
class MemoryOpinion:
    """Leave-one-out scores of the training images: ``image_scores`` (N,) and ``patch_scores`` (N, h, w)
    on the pooled feature grid. Higher = more likely a contaminating defect."""

    image_scores: np.ndarray
    patch_scores: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.image_scores) != len(self.patch_scores):
            raise ValueError(f"{len(self.image_scores)} image scores but {len(self.patch_scores)} patch maps")

    def __len__(self) -> int:
        return len(self.image_scores)

    def excluded(self, config: TrustConfig) -> np.ndarray:
        """(N,) bool: images above the image fence."""
        return fenced_out(self.image_scores, config)

    def patch_weights(self, config: TrustConfig, grid: tuple[int, int], keep: np.ndarray | None = None,
                      margin: int = 0) -> torch.Tensor:
        """(N, *grid) float weights: 0 for patches above the patch fence (and, with ``margin``, for their
        neighbours up to ``margin`` pooled patches away), 1 elsewhere. The fence is read from the patches of
        the ``keep`` images (default: all), upsampled (nearest) to the feature grid."""
        scores = self.patch_scores
        basis = scores if keep is None or not keep.any() else scores[torch.as_tensor(np.flatnonzero(keep))]
        # A random sample of the patches is enough for a quantile-based fence and bounds its cost.
        flat = basis.flatten()
        if flat.numel() > 200_000:
            flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
        fence, _ = robust_fence(flat.double().numpy(), config.patch_fence, config.patch_k)
        distrusted = (scores > fence).float()[:, None]
        if margin > 0:  # a defect's faint rim scores below the fence but is part of it
            distrusted = F.max_pool2d(distrusted, 2 * margin + 1, stride=1, padding=margin)
        weights = 1.0 - distrusted
        if tuple(weights.shape[-2:]) != tuple(grid):
            weights = F.interpolate(weights, size=grid, mode="nearest")
        return weights[:, 0]


@torch.no_grad()
def memory_opinion(features: torch.Tensor, config: TrustConfig, *, seed: int = 0,
                   device: str | torch.device = "cpu",
                   progress: Callable[[int, int], None] | None = None) -> MemoryOpinion:
    """The leave-one-out opinion of ``config.n_memories`` sparse random memories on ``features``
    (N, D, h, w), re-scored ``config.trim_rounds`` times against memories of the images still in;
    ``progress(done, total)`` per batch of images (the pass can take a while on a CPU)."""
    n = len(features)
    if n < 3:
        raise ValueError(f"a leave-one-out opinion needs at least 3 training images, got {n}")
    pooled = features.float()
    if config.pool > 1:
        pooled = F.avg_pool2d(pooled, config.pool, ceil_mode=True)
    passes = 1 + config.trim_rounds
    keep = np.ones(n, dtype=bool)
    for index in range(passes):
        step = None if progress is None else (lambda i, _total, index=index: progress(index * n + i, passes * n))
        patches = _scores_against(pooled, keep, config, seed=seed, device=device, progress=step)
        image_scores = top_k_mean(patches, config.top_k).numpy().astype(np.float64)
        inside = ~fenced_out(image_scores, config)
        if inside.sum() < 3 or np.array_equal(inside, keep):
            break  # a fixed point (or too few left to build memories from)
        keep = inside
    if progress is not None:
        progress(passes * n, passes * n)  # a fixed point ends the passes early
    return MemoryOpinion(image_scores=image_scores, patch_scores=patches)


def _scores_against(pooled: torch.Tensor, keep: np.ndarray, config: TrustConfig, *, seed: int,
                    device: str | torch.device, progress: Callable[[int, int], None] | None) -> torch.Tensor:
    """(N, h, w) patch scores against memories of the ``keep`` images: leave-one-out for those, plain for
    the rest (their patches are not in the memories either, so both read "unseen")."""
    memory = MemoryConfig(n_memories=config.n_memories, fraction=config.fraction,
                          aggregate=config.aggregate, top_k=config.top_k, query_stride=1,  # pooled already
                          probe=1.0)  # and exact: the pooled pass is cheap, and the weights rest on it
    inside = torch.as_tensor(np.flatnonzero(keep))
    head = MemoryHead(pooled.shape[1], memory, seed=seed).to(device)
    head.fit_statistics(pooled[inside])
    scores = torch.empty(pooled.shape[0], *pooled.shape[2:])
    scores[inside] = head.training_patch_scores(pooled[inside], batch_size=16, progress=progress)
    outside = torch.as_tensor(np.flatnonzero(~keep))
    for start in range(0, len(outside), 16):
        batch = outside[start:start + 16]
        scores[batch] = head.patch_scores(pooled[batch].to(device)).cpu()
    if progress is not None and len(outside):
        progress(len(keep), len(keep))
    return scores

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

    def patch_weights(self, config: TrustConfig, grid: tuple[int, int], keep: np.ndarray | None = None) -> torch.Tensor:
        """(N, *grid) float weights: 0 for patches above the patch fence, 1 elsewhere. The fence is read
        from the patches of the ``keep`` images (default: all), upsampled (nearest) to the feature grid."""
        scores = self.patch_scores
        basis = scores if keep is None or not keep.any() else scores[torch.as_tensor(np.flatnonzero(keep))]
        # A random sample of the patches is enough for a quantile-based fence and bounds its cost.
        flat = basis.flatten()
        if flat.numel() > 200_000:
            flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
        fence, _ = robust_fence(flat.double().numpy(), config.patch_fence, config.patch_k)
        weights = (scores <= fence).float()[:, None]
        if tuple(weights.shape[-2:]) != tuple(grid):
            weights = F.interpolate(weights, size=grid, mode="nearest")
        return weights[:, 0]


@torch.no_grad()
def memory_opinion(features: torch.Tensor, config: TrustConfig, *, seed: int = 0,
                   device: str | torch.device = "cpu",
                   progress: Callable[[int, int], None] | None = None) -> MemoryOpinion:
    """The leave-one-out opinion of ``config.n_memories`` sparse random memories on ``features``
    (N, D, h, w); ``progress(done, total)`` per batch of images (the pass can take a while on a CPU)."""
    if len(features) < 3:
        raise ValueError(f"a leave-one-out opinion needs at least 3 training images, got {len(features)}")
    pooled = features.float()
    if config.pool > 1:
        pooled = F.avg_pool2d(pooled, config.pool, ceil_mode=True)
    memory = MemoryConfig(n_memories=config.n_memories, fraction=config.fraction,
                          aggregate=config.aggregate, top_k=config.top_k, query_stride=1,  # pooled already
                          probe=1.0)  # and exact: the pooled pass is cheap, and the weights rest on it
    head = MemoryHead(pooled.shape[1], memory, seed=seed).to(device)
    head.fit_statistics(pooled)
    patches = head.training_patch_scores(pooled, batch_size=16, progress=progress)
    image_scores = top_k_mean(patches, config.top_k).numpy().astype(np.float64)
    return MemoryOpinion(image_scores=image_scores, patch_scores=patches)

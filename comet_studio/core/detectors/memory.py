"""Contamination-robust memory ensemble: B sparse random patch memories, nearest-neighbour distance averaged.

Why random and sparse: a greedy coreset (PatchCore) keeps exactly the rare patches, so defects copied into
the training folder end up in the memory and their twins score as normal. A random ``fraction`` (~10%) of
the patches keeps any one defect patch with probability ~``fraction``, and B such memories filter out
that luck (MeDS, ICML 2026). We combine them with a max by default (``MemoryConfig.aggregate``): a copied
defect is covered by some memories but rarely by all, while normal patterns are covered by every one;
the average lets the memories that do hold the defect pull its score down. Training images are scored
leave-one-image-out, so the same memories also give the CoMet trainer a contamination prior before any
training step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import MemoryConfig
from .nearest import PatchMemoryHead, memory_size
from .seeded import draw_seed, generator_or_default

__all__ = ["MemoryHead", "memory_prior_scores"]


class MemoryHead(PatchMemoryHead):
    """``config.n_memories`` memories, each a seeded uniform sample of ``config.fraction`` of the training
    patches (at most ``config.max_patches``), stored in fp16 when ``config.fp16``; patch distances are
    combined over the memories by ``config.aggregate``.

    ``seed`` fixes the samples; ``None`` draws it from ``generator`` (seed 0 when None), which
    ``AnomalyModel.fit`` seeds with ``TrainConfig.seed``, so fits stay reproducible.
    """

    def __init__(self, dim: int, config: MemoryConfig, *, seed: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(dim, n_memories=config.n_memories, fp16=config.fp16, top_k=config.top_k,
                         aggregate=config.aggregate, candidates=config.candidates,
                         query_stride=config.query_stride, refine=config.refine, probe=config.probe)
        self.config = config
        self.seed = draw_seed(generator_or_default(generator)) if seed is None else int(seed)

    def _select(self, features: torch.Tensor) -> torch.Tensor:
        n, _, h, w = features.shape
        total = n * h * w
        size = memory_size(total, h * w, self.config.fraction, self.config.max_patches)
        generator = torch.Generator().manual_seed(self.seed)
        return torch.stack([torch.randperm(total, generator=generator)[:size]
                            for _ in range(self.config.n_memories)])


def memory_prior_scores(features: torch.Tensor, config: MemoryConfig, *, seed: int = 0,
                        device: str | torch.device = "cpu") -> np.ndarray:
    """(N,) leave-one-image-out anomaly scores of the training images ``features`` (N, D, h, w): each image
    is scored against memories built from all the others. Higher = more likely a contaminating defect."""
    head = MemoryHead(features.shape[1], config, seed=seed).to(device)
    head.fit_statistics(features)
    return head.training_scores(features).numpy().astype(np.float64)

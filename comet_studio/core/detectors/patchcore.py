"""PatchCore baseline: one memory of a greedy k-center coreset of the training patches.

Kept as the reference point for contamination: the coreset covers the feature space as evenly as it can,
so it keeps exactly the rare patches, and defects copied into the training folder become "normal". Compare
with ``MemoryHead`` (random sparse memories), which is built to resist that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..validation import check, check_at_least, check_range
from .nearest import PatchMemoryHead, flat_patches, memory_size
from .seeded import draw_seed, generator_or_default

__all__ = ["PatchCoreConfig", "PatchCoreHead", "greedy_coreset", "random_projection"]

# Patches projected per block (bounds the float32 copy of the features during selection).
_PROJECT_BLOCK = 65_536


@dataclass(frozen=True, kw_only=True)
class PatchCoreConfig:
    """PatchCore baseline: one memory, a greedy k-center coreset of ``fraction`` of the training patches,
    selected on a seeded random projection to ``projection_dim`` dimensions."""

    fraction: float = 0.1
    projection_dim: int = 128
    max_patches: int = 50_000
    fp16: bool = False
    top_k: float = 0.01

    def __post_init__(self) -> None:
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction!r}")
        check_at_least(self, projection_dim=8, max_patches=16)
        check_range("top_k", self.top_k, 0.0, 1.0)


@torch.no_grad()
def random_projection(features: torch.Tensor, dim: int, generator: torch.Generator,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(N*h*w, min(D, dim)) float32 patches, projected by a seeded Gaussian matrix when D > ``dim``
    (Johnson-Lindenstrauss: pairwise distances survive, and selection gets cheaper)."""
    patches = flat_patches(features)
    in_dim = patches.shape[1]
    matrix = torch.randn(in_dim, dim, generator=generator) / math.sqrt(dim) if in_dim > dim else None
    out = []
    for start in range(0, patches.shape[0], _PROJECT_BLOCK):
        block = patches[start:start + _PROJECT_BLOCK].to(device, torch.float32)
        out.append(block @ matrix.to(device) if matrix is not None else block)
    return torch.cat(out)


@torch.no_grad()
def greedy_coreset(points: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``size`` rows of ``points`` (P, d) chosen by greedy k-center: start from a seeded random
    row, then repeatedly take the row farthest from everything chosen so far. Memory O(P): squared
    distances to the newest centre come from one matrix-vector product."""
    if not 1 <= size <= points.shape[0]:
        raise ValueError(f"coreset size must be in [1, {points.shape[0]}], got {size}")
    norms = (points * points).sum(dim=1)
    chosen = torch.empty(size, dtype=torch.long)
    centre = int(torch.randint(points.shape[0], (), generator=generator))
    nearest = torch.full_like(norms, math.inf)
    for i in range(size):
        chosen[i] = centre
        dist = (norms + norms[centre] - 2.0 * (points @ points[centre])).clamp_min_(0)
        nearest = torch.minimum(nearest, dist)
        centre = int(nearest.argmax())
    return chosen


class PatchCoreHead(PatchMemoryHead):
    """A single memory: the greedy coreset of ``config.fraction`` of the training patches (at most
    ``config.max_patches``), patch score = nearest-neighbour L2 distance, image score = top-k mean.
    ``seed`` fixes the projection and the first centre; ``None`` draws it from ``generator`` (seed 0 when
    None; ``AnomalyModel.fit`` hands one seeded with ``TrainConfig.seed``)."""

    def __init__(self, dim: int, config: PatchCoreConfig, *, seed: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(dim, n_memories=1, fp16=config.fp16, top_k=config.top_k)
        self.config = config
        self.seed = draw_seed(generator_or_default(generator)) if seed is None else int(seed)

    def _select(self, features: torch.Tensor) -> torch.Tensor:
        n, _, h, w = features.shape
        size = memory_size(n * h * w, h * w, self.config.fraction, self.config.max_patches)
        generator = torch.Generator().manual_seed(self.seed)
        projected = random_projection(features, self.config.projection_dim, generator, self.memory.device)
        return greedy_coreset(projected, size, generator).unsqueeze(0)

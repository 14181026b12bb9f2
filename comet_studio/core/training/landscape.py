"""Loss landscape: a 2-D slice of the training loss around a trained head's parameters.

Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets"): draw two random Gaussian directions in
parameter space and rescale every filter (row) of each direction to the norm of the matching row of the
trained weights, so the slice is comparable across models whatever their weight scale. One-dimensional
parameters (biases, normalisation scales) get a zero direction, as in the paper's default. The loss at each
grid point (alpha, beta) is the mean per-sample loss over the cached training features, with the noise
generator reseeded at every point so the surface shows parameter changes only, not fresh noise.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..detectors.base import DetectorHead
from ..features.cache import StopRequested
from ..progress import Progress

__all__ = ["LandscapeConfig", "LossLandscape", "filter_normalised_direction", "loss_landscape"]


@dataclass(frozen=True, kw_only=True)
class LandscapeConfig:
    """``grid`` points per axis over [-span, span] (odd, so the trained point is on the grid);
    ``max_images`` caps the features used (a seeded subset) because every grid point is a full pass."""

    grid: int = 11
    span: float = 1.0
    seed: int = 0
    noise_seed: int = 0
    max_images: int | None = 64
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not (3 <= self.grid <= 101 and self.grid % 2 == 1):
            raise ValueError(f"grid must be an odd number in [3, 101], got {self.grid!r}")
        if not self.span > 0:
            raise ValueError(f"span must be > 0, got {self.span!r}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {self.max_images!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")


@dataclass(frozen=True)
class LossLandscape:
    """``losses[i, j]`` is the mean training loss at ``theta + alphas[i] * d1 + betas[j] * d2``."""

    alphas: np.ndarray  # (G,)
    betas: np.ndarray  # (G,)
    losses: np.ndarray  # (G, G)
    n_images: int

    @property
    def center_loss(self) -> float:
        """The loss of the trained parameters themselves."""
        return float(self.losses[len(self.alphas) // 2, len(self.betas) // 2])


def filter_normalised_direction(params: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A Gaussian direction with each row (output filter) scaled to the norm of the same row of ``params``.

    Rows are the first dimension: a conv filter or a linear layer's output unit. 1-D tensors (biases)
    get zeros, so the slice moves weights only.
    """
    direction = []
    for p in params:
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device, p.dtype)
        p_rows = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        d_rows = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        scale = (p_rows / d_rows).view(-1, *([1] * (p.dim() - 1)))
        direction.append(d * scale)
    return direction


def _subset(n: int, max_images: int | None, seed: int) -> torch.Tensor:
    if max_images is None or n <= max_images:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:max_images].sort().values


@torch.no_grad()
def _mean_loss(head: DetectorHead, features: torch.Tensor, batch_size: int, device: torch.device,
               noise_seed: int) -> float:
    generator = torch.Generator(device=device).manual_seed(noise_seed)
    total = 0.0
    for i in range(0, len(features), batch_size):
        batch = features[i:i + batch_size].to(device).float()
        total += float(head.per_sample_loss(batch, generator).sum())
    return total / len(features)


def loss_landscape(
    head: DetectorHead,
    features: torch.Tensor,
    config: LandscapeConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> LossLandscape:
    """Evaluate the training loss of a trained ``head`` on a ``grid x grid`` slice around its parameters.

    The head is copied: the caller's model is never modified. ``progress("landscape", done, total)`` is
    called after every grid point; a set ``stop`` event raises ``StopRequested`` between points.
    """
    config = config or LandscapeConfig()
    if not head.trainable or not head.trainable_parameters():
        raise ValueError(f"{type(head).__name__} has no trainable parameters, so it has no loss landscape; "
                         f"use a trained head (simplenet or flow)")
    if len(features) < 1:
        raise ValueError("loss_landscape needs the training features of at least one image")
    device = torch.device(device)
    work = copy.deepcopy(head).to(device).eval()
    params = work.trainable_parameters()
    origin = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(config.seed)
    d1 = filter_normalised_direction(origin, generator)
    d2 = filter_normalised_direction(origin, generator)
    subset = features[_subset(len(features), config.max_images, config.seed)]
    coords = np.linspace(-config.span, config.span, config.grid)
    losses = np.zeros((config.grid, config.grid))
    total = config.grid * config.grid
    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            if stop is not None and stop.is_set():
                raise StopRequested("stopped during the loss landscape")
            with torch.no_grad():
                for p, p0, u, v in zip(params, origin, d1, d2):
                    p.copy_(p0 + float(a) * u + float(b) * v)
            losses[i, j] = _mean_loss(work, subset, config.batch_size, device, config.noise_seed)
            if progress is not None:
                progress("landscape", i * config.grid + j + 1, total)
    return LossLandscape(alphas=coords, betas=coords.copy(), losses=losses, n_images=len(subset))

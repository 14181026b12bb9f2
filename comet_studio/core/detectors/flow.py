"""Normalizing-flow head: a FrEIA ``SequenceINN`` of ``AllInOneBlock`` couplings over the patch-feature map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import AllInOneBlock
from torch import nn

from ..validation import check, check_range
from .base import DetectorHead
from .seeded import generator_or_default, seeded_conv2d

__all__ = ["FlowConfig", "FlowHead", "conv_subnet"]


@dataclass(frozen=True, kw_only=True)
class FlowConfig:
    """FrEIA normalizing flow on the patch features (conv subnets, AllInOneBlock couplings)."""

    n_blocks: int = 4
    hidden_ratio: float = 1.0
    kernel_size: int = 3
    clamp: float = 2.0
    learning_rate: float = 1e-3
    top_k: float = 0.01

    def __post_init__(self) -> None:
        check(1 <= self.n_blocks <= 32, f"n_blocks must be in [1, 32], got {self.n_blocks!r}")
        check(self.hidden_ratio > 0, f"hidden_ratio must be > 0, got {self.hidden_ratio!r}")
        check(self.kernel_size in (1, 3, 5), f"kernel_size must be 1, 3 or 5, got {self.kernel_size!r}")
        check(self.clamp > 0, f"clamp must be > 0, got {self.clamp!r}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate!r}")
        check_range("top_k", self.top_k, 0.0, 1.0)



def conv_subnet(kernel_size: int, hidden_ratio: float,
                generator: torch.Generator | None = None) -> Callable[[int, int], nn.Module]:
    """FrEIA ``subnet_constructor``: ``f(c_in, c_out)`` -> Conv(k)-ReLU-Conv(k) with ``hidden_ratio * c_in``
    hidden channels, initialised from ``generator``. The last conv starts at zero, so every coupling starts
    as the identity (the flow is then only the global affine scaling) and early steps cannot blow up."""
    generator = generator_or_default(generator)

    def build(c_in: int, c_out: int) -> nn.Module:
        hidden = max(1, int(round(hidden_ratio * c_in)))
        pad = kernel_size // 2
        # Drawn in the order of earlier versions (last, then first), so the same seed gives the same flow.
        last = seeded_conv2d(hidden, c_out, kernel_size, pad, generator)
        first = seeded_conv2d(c_in, hidden, kernel_size, pad, generator)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return nn.Sequential(first, nn.ReLU(), last)

    return build


class FlowHead(DetectorHead):
    """Maps standardised patch features x (B, D, h, w) to latents z = f(x) that should be N(0, I) for normal
    patches; a patch far out in z is anomalous.

    - Features are standardised with the training set's per-channel mean and std (buffers, set by
      ``fit_statistics``): raw EfficientNet features have stds of 3-6 and would start the flow far from
      N(0, I), with huge early gradients.
    - The blocks use hard permutations (``permute_soft=False``). FrEIA draws them from NumPy's global RNG; we
      redraw them, and the subnets' weights, from ``generator`` (seed 0 when None), so the generator alone
      makes a head reproducible. They are stored by
      FrEIA as ``nn.Parameter(requires_grad=False)`` and thus travel in the state_dict, but
      ``trainable_parameters()`` leaves them out, so Adam, Reptile and the L2 term never touch them.
    - The convolutions work on any grid, so the INN is built for a 1x1 grid and applied to (h, w) as given.
    """

    def __init__(self, dim: int, config: FlowConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling flow splits the channels in two, so it needs dim >= 2; got dim={dim}")
        self.config = config
        self.top_k = config.top_k
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        generator = generator_or_default(generator)
        subnet = conv_subnet(config.kernel_size, config.hidden_ratio, generator)
        self.flow = SequenceINN(dim, 1, 1)
        for _ in range(config.n_blocks):
            self.flow.append(AllInOneBlock, subnet_constructor=subnet, affine_clamping=config.clamp,
                             permute_soft=False)
        _redraw_permutations(self.flow, generator)

    def fit_statistics(self, features: torch.Tensor) -> None:
        patches = features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        self.feature_mean.copy_(patches.mean(0))
        self.feature_std.copy_(patches.std(0).clamp_min(1e-6))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Subnet weights and the global affine scale/offset; never the fixed permutation matrices."""
        return [p for p in self.parameters() if p.requires_grad and p.is_floating_point()]

    def _standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features.float() - self.feature_mean.view(1, -1, 1, 1)) / self.feature_std.view(1, -1, 1, 1)

    def latents(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, log|det J|): z has the features' shape, log|det J| is one value per image (summed over
        channels and patches)."""
        if features.dim() != 4 or features.shape[1] != self.feature_mean.numel():
            raise ValueError(f"expected features (B, {self.feature_mean.numel()}, h, w), "
                             f"got {tuple(features.shape)}")
        return self.flow(self._standardise(features))

    def per_sample_loss(self, features: torch.Tensor, generator: torch.Generator | None = None,
                        patch_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood per image, averaged over patches and divided by D so values are O(1):
        (0.5 * ||z||^2 - log|det J|) / (D * h * w), dropping the constant 0.5 * log(2 pi). Deterministic:
        ``generator`` is accepted for the contract and unused. With ``patch_weights`` the z term is weighted
        per patch and the (whole-map) log-det by the mean weight."""
        z, log_det = self.latents(features)
        b, d, h, w = z.shape
        if patch_weights is None:
            return (0.5 * z.pow(2).flatten(1).sum(dim=1) - log_det) / (d * h * w)
        weights = patch_weights.to(z)
        squared = (z.pow(2).sum(dim=1) * weights).flatten(1).sum(dim=1)
        return (0.5 * squared - log_det * weights.flatten(1).mean(dim=1)) / (d * h * w)

    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Per-patch 0.5 * mean_c z^2 (FastFlow's score). AllInOneBlock returns log|det J| summed over the
        whole map, not per patch, so the exact per-patch NLL is not available without re-running each
        subnet; the global-affine part of the log-det is the same for every patch anyway, and the z term
        carries the ranking."""
        z, _ = self.latents(features)
        return 0.5 * z.pow(2).mean(dim=1)


@torch.no_grad()
def _redraw_permutations(flow: SequenceINN, generator: torch.Generator) -> None:
    """Replace each block's NumPy-drawn hard permutation by one drawn from ``generator``."""
    for block in flow:
        channels = block.w_perm.shape[0]
        perm = torch.eye(channels)[torch.randperm(channels, generator=generator)]
        block.w_perm.copy_(perm.view_as(block.w_perm))
        block.w_perm_inv.copy_(perm.t().contiguous().view_as(block.w_perm_inv))

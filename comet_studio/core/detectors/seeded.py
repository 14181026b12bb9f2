"""Layers initialised from a ``torch.Generator`` handed in, never from torch's global RNG.

A head built twice from generators with the same seed has the same weights, whatever else in the process
drew random numbers. The draws are torch's default initialisation (``nn.Linear``/``nn.Conv2d``
``reset_parameters``: Kaiming-uniform weights with a = sqrt(5), biases U(+-1/sqrt(fan_in))) in the same
order, so a generator seeded with s gives the weights the global RNG gave after ``torch.manual_seed(s)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["generator_or_default", "seeded_linear", "seeded_conv2d", "draw_seed"]


def generator_or_default(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a fresh one with seed 0 (a head built without one is still reproducible)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def draw_seed(generator: torch.Generator) -> int:
    """A seed for a head's own generators, drawn from ``generator``."""
    return int(torch.randint(0, 2**31 - 1, (), generator=generator).item())


@torch.no_grad()
def _reset(layer: nn.Linear | nn.Conv2d, generator: torch.Generator) -> None:
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    fan_in = layer.weight[0].numel()
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    layer.bias.uniform_(-bound, bound, generator=generator)


def seeded_linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    # skip_init builds the layer without its default (global-RNG) initialisation.
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features)
    _reset(layer, generator)
    return layer


def seeded_conv2d(in_channels: int, out_channels: int, kernel_size: int, padding: int,
                  generator: torch.Generator) -> nn.Conv2d:
    layer = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, kernel_size, padding=padding)
    _reset(layer, generator)
    return layer

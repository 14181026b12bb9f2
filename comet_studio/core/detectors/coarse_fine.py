"""Coarse-to-fine patch scoring: every patch of a sparse lattice, then every patch around its highest scores.

A memory's image score is the mean of its top 1% patch scores, and its anomaly map is blurred with a
Gaussian wider than a patch. So most of the exact patch scores are wasted work: what matters exactly are
the few highest patches, and the rest of the map only needs its shape. With ``stride`` 2 the patches of
every other row and column are scored (a quarter of the work); then the ``refine`` fraction of highest
lattice patches of each image has its whole neighbourhood (the (2 stride - 1)^2 patches around it) scored
exactly; the other patches take the score of their lattice patch. Because neighbouring patch features
overlap (each is a 3x3 neighbourhood average), the top patches sit next to high lattice patches, so the
image score is the exact one in nearly every image (measured in ``tests`` and in the README), at about a
third of the work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["coarse_to_fine"]

# score(patches (P, D), image index (P,) int32) -> (P,) scores
PatchScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def coarse_to_fine(features: torch.Tensor, score: PatchScorer, *, stride: int, refine: float,
                   min_refine: int = 1, first_image: int = 0) -> torch.Tensor:
    """(n, h, w) patch scores of ``features`` (n, D, h, w); ``score`` is called twice (lattice, then the
    neighbourhoods to refine) with the patches and their image index (``first_image`` + position in the
    batch, for leave-one-image-out). At least ``min_refine`` lattice patches per image are refined."""
    n, dim, h, w = features.shape
    if stride <= 1:
        image = torch.arange(n, dtype=torch.int32).repeat_interleave(h * w) + first_image
        return score(features.permute(0, 2, 3, 1).reshape(-1, dim), image).view(n, h, w)
    lattice = torch.zeros(h, w, dtype=torch.bool)
    lattice[::stride, ::stride] = True
    coarse = _score_at(features, lattice.expand(n, h, w), score, first_image)  # (n, hc * wc)
    hc, wc = math.ceil(h / stride), math.ceil(w / stride)
    coarse = coarse.view(n, hc, wc)
    # Nearest fill: each patch starts with its lattice patch's score.
    scores = coarse.repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)[:, :h, :w].contiguous()
    top = min(hc * wc, max(1, min_refine, math.ceil(refine * hc * wc)))
    chosen = torch.zeros(n, hc * wc)
    chosen.scatter_(1, coarse.flatten(1).topk(top, dim=1).indices, 1.0)
    seeds = torch.zeros(n, 1, h, w)
    seeds[:, 0, ::stride, ::stride] = chosen.view(n, hc, wc)
    around = F.max_pool2d(seeds, 2 * stride - 1, stride=1, padding=stride - 1)[:, 0] > 0
    around &= ~lattice
    if around.any():
        scores[around] = _score_at(features, around, score, first_image, flat=True)
    return scores


def _score_at(features: torch.Tensor, where: torch.Tensor, score: PatchScorer, first_image: int,
              flat: bool = False) -> torch.Tensor:
    """Scores of the patches at the True positions of ``where`` (n, h, w), in row-major order."""
    image, y, x = torch.nonzero(where, as_tuple=True)
    patches = features[image, :, y, x]  # (P, D)
    values = score(patches, (image + first_image).to(torch.int32))
    return values if flat else values.view(features.shape[0], -1)

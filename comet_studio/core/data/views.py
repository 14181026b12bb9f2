"""Test-time views of an image batch: the score of an image averaged over transformed copies of it
(iterative refinement's eq. 4 averages over rotations, brightness and contrast).

A view maps square images (B, 3, S, S) in [0, 1] to images of the same shape; ``align_view`` maps a score
map computed on the view back onto the original image, so maps from every view can be averaged patch by
patch. Every operation is a plain tensor op (flip, rot90, clamp), so a view runs the same eagerly and
inside an exported graph.
"""

from __future__ import annotations

import torch

from ..config import TEST_VIEWS as VIEWS

__all__ = ["VIEWS", "apply_view", "align_view"]

# Mild changes: a good part must still look like a good part under every view.
BRIGHTNESS_FACTOR = 1.15
CONTRAST_FACTOR = 1.25


def _move(tensor: torch.Tensor, name: str, *, back: bool = False) -> torch.Tensor:
    """The geometric part of view ``name`` on the last two dims (``back``: its inverse); photometric views
    leave the geometry as it is."""
    if name == "hflip":
        return tensor.flip(-1)
    if name == "vflip":
        return tensor.flip(-2)
    if name in ("rot90", "rot180", "rot270"):
        turns = int(name[3:]) // 90
        return torch.rot90(tensor, -turns if back else turns, dims=(-2, -1))
    return tensor


def apply_view(images: torch.Tensor, name: str) -> torch.Tensor:
    """``images`` (B, 3, S, S) in [0, 1] seen through the view ``name``."""
    if name not in VIEWS:
        raise ValueError(f"unknown test-time view {name!r}; choose from {', '.join(VIEWS)}")
    if name == "brighter":
        return (images * BRIGHTNESS_FACTOR).clamp(0, 1)
    if name == "darker":
        return images / BRIGHTNESS_FACTOR
    if name == "contrast":
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return ((images - mean) * CONTRAST_FACTOR + mean).clamp(0, 1)
    return _move(images, name)


def align_view(maps: torch.Tensor, name: str) -> torch.Tensor:
    """Score maps (B, h, w) computed on view ``name`` moved back onto the original image's geometry."""
    return _move(maps, name, back=True)

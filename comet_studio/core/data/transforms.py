"""Resize to the model's square input and convert to a float tensor in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .images import read_image

__all__ = ["resize_image", "load_resized", "to_tensor"]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Squash an RGB uint8 image to ``size`` x ``size`` (area interpolation when shrinking)."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    interpolation = cv2.INTER_AREA if min(height, width) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def load_resized(item: str | Path | np.ndarray, size: int) -> np.ndarray:
    image = item if isinstance(item, np.ndarray) else read_image(item)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return resize_image(np.ascontiguousarray(image[:, :, :3]), size)


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(B, H, W, 3) uint8 arrays -> (B, 3, H, W) float32 in [0, 1]."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return batch.float().div_(255.0)

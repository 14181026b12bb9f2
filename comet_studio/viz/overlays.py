"""Heatmap overlays as images (OpenCV colour map on the original picture), and the patches a first opinion
distrusted outlined: pictures for the Test and Inspect tabs and for batch prediction's heatmap files."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["colorize", "overlay_heatmap", "outline_patches"]


def colorize(anomaly_map: np.ndarray, vmax: float = 1.0) -> np.ndarray:
    """A normalised map (threshold 0.5) -> RGB uint8 with a fixed scale: 0 blue, 0.5 green-yellow, >=vmax red.
    A fixed scale makes maps of different images comparable."""
    scaled = np.clip(anomaly_map / vmax, 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay_heatmap(image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the colourised map (resized to the image) over an RGB uint8 image."""
    height, width = image.shape[:2]
    resized = cv2.resize(anomaly_map.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 1 - alpha, colorize(resized), alpha, 0)


def outline_patches(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """``image`` (RGB uint8) with the cells of the boolean patch grid ``mask`` (h, w) outlined: the patches a
    robust first opinion distrusted."""
    out = image.copy()
    height, width = out.shape[:2]
    rows, cols = mask.shape
    for y, x in zip(*np.nonzero(mask), strict=True):
        top, left = int(y * height / rows), int(x * width / cols)
        bottom, right = int((y + 1) * height / rows) - 1, int((x + 1) * width / cols) - 1
        cv2.rectangle(out, (left, top), (right, bottom), color, thickness=max(1, min(height, width) // 128))
    return out

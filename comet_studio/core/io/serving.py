"""The deployable graph: raw camera frames (uint8 RGB, any size) -> ``Scores``, with no Python around it.

``ServingModel`` = ``CvResize`` (the Python pipeline's resize, as tensor ops) -> [0, 1] -> ``InferenceModel``
(normalisation, backbone, head, heatmap, PostProcessor threshold). It is what ONNX and TorchScript export.

Why not ``F.interpolate(bilinear)``: training and ``AnomalyModel.predict`` resize with OpenCV
(``core/data/transforms.py``: INTER_AREA when both sides shrink, else INTER_LINEAR). Bilinear without
antialiasing aliases on a large shrink, so a deployed graph would score other pixels than the ones the
threshold was fitted on. ``CvResize`` reproduces OpenCV's uint8 arithmetic instead, with tensor ops that
stay dynamic in height and width (checked against cv2 5.0 in tests/unit/core/io/test_export.py):

- INTER_AREA: box sums with the exact fractional overlaps (from running sums, in float64), divided by the
  box area and rounded half to even; an exact 2x2 shrink rounds half up (OpenCV's SIMD fast path). Where
  OpenCV's float32 sums round differently (values within ~1e-5 of a tie), a pixel can differ by one level.
- INTER_LINEAR: OpenCV's fixed point: 11-bit weights from float32 source positions, a horizontal pass, then
  the vertical pass with its ``>> 4`` / ``mulhi`` / ``(y + 2) >> 2`` steps, done as exact float64 integers.
"""

from __future__ import annotations

import torch
from torch import nn

from ..detectors.inference import InferenceModel, Scores

__all__ = ["CvResize", "ServingModel"]

_ONE = 2048.0  # OpenCV's INTER_RESIZE_COEF_SCALE (11 fractional bits)


def _length(size: int, device: torch.device) -> torch.Tensor:
    # The length as a 1-element tensor computed from data: keeps the graph dynamic in every exporter.
    return torch.arange(size, dtype=torch.float64, device=device)[-1:] + 1


def _box_sums(x: torch.Tensor, dim: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of ``x`` over ``size`` equal boxes [i*scale, (i+1)*scale) along ``dim`` (fractional pixels count
    by their overlap), and scale. Through the running sum C, so the cost is O(H*W), not a matmul's O(S*H*W):
    the integral up to position t is C[floor t] + frac(t) * x[floor t]."""
    length = x.shape[dim]
    n = _length(length, x.device)
    scale = n / size
    edges = torch.arange(size + 1, dtype=torch.float64, device=x.device) * scale  # 0 .. n
    pixel = torch.minimum(torch.floor(edges), n - 1)
    index = pixel.long()
    shape = [1] * x.dim()
    shape[dim] = size + 1
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    running = torch.cat([zero, torch.cumsum(x, dim)], dim)  # running[k] = sum of the first k pixels
    integral = running.index_select(dim, index) + (edges - pixel).view(shape) * x.index_select(dim, index)
    return integral.narrow(dim, 1, size) - integral.narrow(dim, 0, size), scale


def _linear_taps(length: int, size: int, device: torch.device, clamp_border: bool):
    """OpenCV's bilinear taps for one axis: source indices (i0, i1) and 11-bit weights (w0, w1).

    The horizontal pass zeroes the fraction at the borders (``clamp_border``); the vertical pass only
    clips the row indices."""
    n = _length(length, device)
    target = torch.arange(size, dtype=torch.float64, device=device)
    position = ((target + 0.5) * (n / size) - 0.5).float()  # OpenCV computes in double, stores float
    start = torch.floor(position)
    fraction = position - start
    if clamp_border:
        outside = (start < 0) | (start >= n.float() - 1)
        fraction = torch.where(outside, torch.zeros_like(fraction), fraction)
    last = n.long() - 1
    i0 = torch.minimum(start.long().clamp(min=0), last)
    i1 = torch.minimum((start.long() + 1).clamp(min=0), last)
    w0 = torch.round((1 - fraction) * _ONE).double()  # cvRound: half to even, like torch.round
    w1 = torch.round(fraction * _ONE).double()
    return i0, i1, w0, w1


class CvResize(nn.Module):
    """(B, H, W, 3) uint8 RGB -> (B, 3, size, size) float32 holding integers in [0, 255]: exactly what
    ``core.data.transforms.resize_image`` (OpenCV) returns for the same frames, for any H and W."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).double()
        height, width = _length(x.shape[2], x.device), _length(x.shape[3], x.device)
        shrink = (height > self.size) & (width > self.size)  # a tensor, not a Python bool: no trace guard
        return torch.where(shrink, self._area(x), self._linear(x)).float()

    def _area(self, x: torch.Tensor) -> torch.Tensor:
        rows, scale_y = _box_sums(x, 2, self.size)
        sums, scale_x = _box_sums(rows, 3, self.size)
        mean = sums / (scale_y * scale_x)
        # Snap to a 2^-30 grid: an exact tie (k + 0.5, frequent for simple scales such as 8/7) that float64
        # rounding moved by 1e-13 rounds as OpenCV's (exact there) float32 sum does.
        mean = torch.round(mean * 2.0**30) / 2.0**30
        halving = (scale_y == 2) & (scale_x == 2)
        return torch.where(halving, torch.floor(mean + 0.5), torch.round(mean))

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        c0, c1, a0, a1 = _linear_taps(x.shape[3], self.size, x.device, clamp_border=True)
        r0, r1, b0, b1 = _linear_taps(x.shape[2], self.size, x.device, clamp_border=False)
        rows = x.index_select(3, c0) * a0 + x.index_select(3, c1) * a1  # horizontal pass, exact integers

        def vertical(index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            shifted = torch.floor(rows.index_select(2, index) / 16)  # >> 4, then 16-bit mulhi (>> 16)
            return torch.floor(shifted * weight[:, None] / 65536)

        return torch.floor((vertical(r0, b0) + vertical(r1, b1) + 2) / 4).clamp(0, 255)


class ServingModel(nn.Module):
    """uint8 RGB frames (B, H, W, 3), any B, H, W -> ``Scores`` (image_score with threshold 0.5, pred_label,
    anomaly_map (B, S, S), raw_score). Channels must be RGB (convert OpenCV's BGR first)."""

    def __init__(self, inference: InferenceModel) -> None:
        super().__init__()
        self.resize = CvResize(inference.extractor.config.image_size)
        self.inference = inference

    def forward(self, images: torch.Tensor) -> Scores:
        return self.inference(self.resize(images) / 255.0)

"""Fast nearest-neighbour search on a CPU: a bfloat16 shortlist, a float32 answer.

The memory detectors spend almost all their time in one product: every query patch against every stored
patch (Q x M x D multiply-adds). On CPUs with native bfloat16 dot products (AVX512-BF16, AMX) that product
runs 3-4x faster in bfloat16, but bfloat16 keeps 8 bits of mantissa, too coarse to rank close neighbours.
So the bfloat16 product only *shortlists*: the stored rows are cut into groups of ``GROUP`` rows, each query keeps the ``candidates`` groups with the smallest approximate distance, and its distance to
every row of those groups is then computed exactly in float32. The answer is the exact nearest distance
whenever the true neighbour's group is on the shortlist (measured on three data sets: every query).
Reductions that return indices (``min(dim)``, ``topk``) are slow on a CPU; ``amin`` over the groups is a
fast vectorised pass, and the ``topk`` then runs over ``GROUP`` times fewer columns.

Without native bfloat16 the product would be emulated and slower: ``native_bf16()`` checks once, by timing,
and the callers then keep the exact float32 search.
"""

from __future__ import annotations

import functools
import math
import time

import torch

__all__ = ["GROUP", "native_bf16", "ShortlistBank"]

GROUP = 8  # stored rows per shortlist group


@functools.cache
def native_bf16() -> bool:
    """Whether a bfloat16 matrix product beats float32 on this CPU by at least 1.5x (timed once, ~50 ms)."""
    a = torch.randn(512, 160)
    b = torch.randn(160, 4096)

    def best_of(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # warm-up: the first call pays for kernel selection
        times = []
        for _ in range(3):
            start = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - start)
        return min(times)

    try:
        return best_of(a.bfloat16(), b.bfloat16()) * 1.5 < best_of(a, b)
    except RuntimeError:  # a build without a bfloat16 matmul on this CPU
        return False


class ShortlistBank:
    """A bank of stored rows (M, D) prepared once for many queries: centred on its mean (distances do not
    change, and bfloat16 products lose far less to rounding than on raw, all-positive features), padded to
    whole groups with far-away rows, in float32 for the exact step and bfloat16 for the shortlist."""

    def __init__(self, rows: torch.Tensor, candidates: int) -> None:
        rows = rows.float()
        self.n_rows = rows.shape[0]
        self.centre = rows.mean(dim=0)
        centred = rows - self.centre
        pad = -self.n_rows % GROUP
        if pad:  # padding rows are never nearest: +inf squared norm in the shortlist, inf exact distance
            centred = torch.cat([centred, centred.new_zeros(pad, centred.shape[1])])
        norms = (centred * centred).sum(dim=1)
        norms[self.n_rows:] = math.inf
        self.exact = centred
        self.low = centred.bfloat16()
        self.low_norms = norms.bfloat16()
        self.n_groups = centred.shape[0] // GROUP
        self.candidates = min(candidates, self.n_groups)

    @torch.no_grad()
    def nearest_squared(self, query: torch.Tensor, skip: list[tuple[int, int, int, int]] | None = None,
                        skip_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(q,) squared distance from each row of ``query`` (q, D) to its nearest stored row. Stored rows a
        query must not see (leave-one-image-out) are given either as ``skip`` ranges (query_start, query_end,
        row_start, row_end), cheap when the bank is sorted by owner, or as a (q, M) bool ``skip_mask``; a
        query left with no row gets ``inf``."""
        query_c = query.float() - self.centre
        approx = torch.addmm(self.low_norms[None, :], query_c.bfloat16(), self.low.T, alpha=-2.0)
        if skip:
            for q0, q1, r0, r1 in skip:
                approx[q0:q1, r0:r1] = math.inf
        if skip_mask is not None:
            approx[:, :self.n_rows].masked_fill_(skip_mask, math.inf)
        # Group j = rows j, j + n_groups, j + 2 n_groups, ...: the minimum over a group is then an
        # element-wise minimum of GROUP contiguous slices (vectorised), not a reduction over 8 neighbours.
        group_min = approx.view(query.shape[0], GROUP, self.n_groups).amin(dim=1)
        groups = group_min.topk(self.candidates, dim=1, largest=False, sorted=False).indices  # (q, c)
        rows = (groups[:, :, None] + self.n_groups * torch.arange(GROUP)).flatten(1)  # (q, c * GROUP)
        exact = (self.exact[rows] - query_c[:, None, :]).square_().sum(dim=2)
        # Rows skipped above or padding must stay out of the exact step too.
        exact.masked_fill_(approx.gather(1, rows).isinf(), math.inf)
        return exact.min(dim=1).values

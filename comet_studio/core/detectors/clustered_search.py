"""Nearest-neighbour search over a clustered bank: each query searches only the clusters nearest to it.

The memory detectors spend almost all their time in one product, every query patch against every stored
patch. Patch features are strongly clustered (background, edges, texture), so a query's nearest stored patch
almost always lies in one of the few clusters whose centre is nearest to the query (the inverted-file idea of
faiss' IVF index). The bank is split by k-means into clusters of about ``CLUSTER_ROWS`` rows; a query is
measured exactly, in float32, against every row of its ``probe`` fraction of nearest clusters and against
nothing else. With ``probe`` 1/8 that is ~8x less arithmetic on any CPU (no bfloat16 needed); measured on
magnetic tile at 256 px, 97% of patch distances are the exact ones and image scores differ by at most 1e-3
relative. A GPU and an exported graph keep the exact search.

k-means is seeded, so the same memory always gives the same clusters (and the same scores after a reload).
"""

from __future__ import annotations

import math

import torch

__all__ = ["CLUSTER_ROWS", "MIN_ROWS", "ClusteredBank"]

CLUSTER_ROWS = 200  # stored rows per cluster on average: small enough to skip most, big enough for a matmul
MIN_ROWS = 4096  # below this a bank is searched exactly: it is cheap already
_KMEANS_ITERATIONS = 8


def _squared_to(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """||p - c||^2 - ||p||^2 for every pair (enough to rank centres per point)."""
    return torch.addmm((centres * centres).sum(dim=1)[None, :], points, centres.T, alpha=-2.0)


def _kmeans(rows: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """(M,) cluster of each row after a few Lloyd iterations from a seeded sample of rows."""
    centres = rows[torch.randperm(rows.shape[0], generator=generator)[:n_clusters]].clone()
    for _ in range(_KMEANS_ITERATIONS):
        assign = _squared_to(rows, centres).argmin(dim=1)
        counts = torch.bincount(assign, minlength=n_clusters)
        sums = torch.zeros_like(centres).index_add_(0, assign, rows)
        filled = counts > 0  # an empty cluster keeps its centre
        centres[filled] = sums[filled] / counts[filled, None].float()
    return _squared_to(rows, centres).argmin(dim=1)


class ClusteredBank:
    """A bank of stored rows (M, D), and optionally the image each came from (M,), prepared once for many
    queries: rows sorted by cluster, the cluster centres (means of their rows), and each cluster's range."""

    def __init__(self, rows: torch.Tensor, probe: float, *, owner: torch.Tensor | None = None,
                 seed: int = 0) -> None:
        if not 0 < probe <= 1:
            raise ValueError(f"probe must be in (0, 1], got {probe!r}")
        rows = rows.float()
        n_clusters = max(1, math.ceil(rows.shape[0] / CLUSTER_ROWS))
        assign = _kmeans(rows, n_clusters, torch.Generator().manual_seed(seed))
        order = assign.argsort(stable=True)
        self.rows = rows[order].contiguous()
        self.norms = (self.rows * self.rows).sum(dim=1)
        self.owner = owner[order].contiguous() if owner is not None else None
        counts = torch.bincount(assign, minlength=n_clusters)
        self.starts = [0, *counts.cumsum(0).tolist()]
        sums = torch.zeros(n_clusters, rows.shape[1]).index_add_(0, assign, rows)
        self.centres = sums / counts.clamp_min(1)[:, None].float()
        self.centres[counts == 0] = math.inf  # never probed
        self.n_probe = min(n_clusters, max(1, math.ceil(probe * n_clusters)))

    @torch.no_grad()
    def nearest(self, query: torch.Tensor, query_owner: torch.Tensor | None = None) -> torch.Tensor:
        """(Q,) L2 distance from each row of ``query`` (Q, D) to its nearest stored row among its probed
        clusters; with ``query_owner`` (Q,), rows of the query's own image are skipped (leave-one-image-out;
        a query left with no row gets ``inf``)."""
        if query_owner is not None and self.owner is None:
            raise ValueError("leave-one-out needs a bank built with the owner of every row")
        query = query.float()
        probed = _squared_to(query, self.centres).topk(self.n_probe, dim=1, largest=False).indices
        # One product per cluster with all the queries that probe it.
        query_index = torch.arange(query.shape[0]).repeat_interleave(self.n_probe)
        cluster = probed.flatten()
        order = cluster.argsort(stable=True)
        query_index, cluster = query_index[order], cluster[order]
        per_cluster = torch.bincount(cluster, minlength=len(self.starts) - 1).tolist()
        best = torch.full((query.shape[0],), math.inf)
        position = 0
        for c, n in enumerate(per_cluster):
            if n == 0:
                continue
            which = query_index[position:position + n]
            position += n
            r0, r1 = self.starts[c], self.starts[c + 1]
            partial = torch.addmm(self.norms[None, r0:r1], query[which], self.rows[r0:r1].T, alpha=-2.0)
            if query_owner is not None:
                partial.masked_fill_(query_owner[which, None] == self.owner[None, r0:r1], math.inf)
            best[which] = torch.minimum(best[which], partial.amin(dim=1))
        return (best + (query * query).sum(dim=1)).clamp_min(0).sqrt()

"""Nearest-neighbour patch memories: chunked L2 distances, leave-one-image-out scoring, data-sized buffers.

``PatchMemoryHead`` is the shared base of the training-free heads (``MemoryHead``: an ensemble of random
sparse memories; ``PatchCoreHead``: one greedy coreset). A subclass only chooses which training patches to
keep (``_select``); storing, scoring, leave-one-out and checkpoint loading live here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from .base import DetectorHead, top_k_mean
from .clustered_search import MIN_ROWS, ClusteredBank
from .coarse_fine import coarse_to_fine
from .fast_search import ShortlistBank, native_bf16

__all__ = ["nearest_distance", "flat_patches", "memory_size", "exact_search", "PatchMemoryHead"]

# Distance entries computed per block: 16 MiB of float32 on the CPU, 128 MiB on a GPU (bigger matmuls
# keep it busy). Bounds peak memory whatever the number of queries or stored patches.
_BLOCK = {"cpu": 1 << 22, "cuda": 1 << 25}


_EXACT: ContextVar[bool] = ContextVar("exact_search", default=False)


@contextmanager
def exact_search() -> Iterator[None]:
    """Inside: every patch scored exactly in float32 (the CPU speed-ups off), as an exported graph scores it.
    The reference an export is checked against: the clustered search and the coarse grid would differ from
    the graph by their tolerance, not by a fault of the export."""
    token = _EXACT.set(True)
    try:
        yield
    finally:
        _EXACT.reset(token)


def _exact() -> bool:
    return _EXACT.get() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def flat_patches(features: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) -> (N*h*w, D), patches of image i at rows i*h*w ... (i+1)*h*w - 1."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def _partial_squared(query: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """||q - b||^2 - ||q||^2 = ||b||^2 - 2 q.b for every pair: one matmul; ||q||^2 and the square root are
    added once per query after the minimum (cdist would take a root per pair)."""
    rows = rows.to(query.device, torch.float32)
    return torch.addmm((rows * rows).sum(dim=1)[None, :], query, rows.T, alpha=-2.0)


def _finish(best: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    return (best + (query * query).sum(dim=1)).clamp_min(0).sqrt()


@torch.no_grad()
def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, *, query_owner: torch.Tensor | None = None,
                     bank_owner: torch.Tensor | None = None, block: int | None = None,
                     candidates: int = 0) -> torch.Tensor:
    """(Q,) L2 distance from each row of ``queries`` (Q, D) to its nearest row of ``bank`` (M, D).

    With owners given, bank rows owned by the query's own image are skipped (leave-one-image-out); a query
    with no other row left gets ``inf``. Computed in float32 blocks of at most ``block`` distances (default
    by device), so a half-precision bank is upcast one block at a time. ``candidates`` > 0 on a CPU with
    native bfloat16: a bfloat16 shortlist of that many rows per query, measured exactly
    (``fast_search``); elsewhere, and on a GPU, the exact float32 search.
    """
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty: fit the head first")
    if (query_owner is None) != (bank_owner is None):
        raise ValueError("give both query_owner and bank_owner, or neither")
    if query_owner is None and (torch.jit.is_tracing() or torch.compiler.is_exporting()):
        # An exported graph keeps a dynamic batch axis: no Python loop over the (symbolic) query count.
        query = queries.float()
        return _finish(_partial_squared(query, bank).min(dim=1).values, query)
    block = block or _BLOCK.get(queries.device.type, _BLOCK["cpu"])
    n_bank = bank.shape[0]
    if candidates > 0 and not _EXACT.get() and queries.device.type == "cpu" and n_bank <= block and native_bf16():
        return _shortlist_distance(queries, bank, query_owner, bank_owner, block, candidates)
    bank_step = min(n_bank, block)
    query_step = max(1, block // bank_step)
    out = torch.empty(queries.shape[0], device=queries.device)
    for qs in range(0, queries.shape[0], query_step):
        query = queries[qs:qs + query_step].float()
        best = torch.full((query.shape[0],), math.inf, device=query.device)
        for bs in range(0, n_bank, bank_step):
            partial = _partial_squared(query, bank[bs:bs + bank_step])
            if query_owner is not None:
                same = query_owner[qs:qs + query_step, None] == bank_owner[None, bs:bs + bank_step]
                partial.masked_fill_(same.to(partial.device), math.inf)
            best = torch.minimum(best, partial.min(dim=1).values)
        out[qs:qs + query_step] = _finish(best, query)
    return out


def _owner_ranges(query_owner: torch.Tensor, bank_owner: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(query_start, query_end, row_start, row_end) per run of equal query owners: the rows to skip, for a
    bank sorted by owner (a run of queries of one image skips one contiguous block of rows)."""
    changes = torch.nonzero(query_owner[1:] != query_owner[:-1]).flatten() + 1
    starts = [0, *changes.tolist()]
    ends = [*changes.tolist(), len(query_owner)]
    owners = query_owner[starts]
    row_start = torch.searchsorted(bank_owner, owners, right=False).tolist()
    row_end = torch.searchsorted(bank_owner, owners, right=True).tolist()
    return [(q0, q1, r0, r1) for q0, q1, r0, r1 in zip(starts, ends, row_start, row_end) if r1 > r0]


def _shortlist_distance(queries: torch.Tensor, bank: torch.Tensor, query_owner: torch.Tensor | None,
                        bank_owner: torch.Tensor | None, block: int, candidates: int) -> torch.Tensor:
    prepared = ShortlistBank(bank, candidates)
    sorted_owner = bank_owner is not None and bool((bank_owner[1:] >= bank_owner[:-1]).all())
    query_step = max(1, block // prepared.exact.shape[0])
    out = torch.empty(queries.shape[0])
    for qs in range(0, queries.shape[0], query_step):
        query = queries[qs:qs + query_step]
        skip = skip_mask = None
        if query_owner is not None:
            owner = query_owner[qs:qs + query_step]
            if sorted_owner:
                skip = _owner_ranges(owner.cpu(), bank_owner.cpu())
            else:
                skip_mask = owner[:, None] == bank_owner[None, :]
        out[qs:qs + query_step] = prepared.nearest_squared(query, skip, skip_mask).clamp_min(0).sqrt()
    return out


class PatchMemoryHead(DetectorHead):
    """Training-free head: ``n_memories`` banks of ``M`` stored training patches each; a patch's score is its
    nearest-neighbour L2 distance to each bank, combined over the banks by ``aggregate`` ("max" or "mean").

    Buffers (saved with the model): ``memory`` (n_memories, M, D), fp16 when ``fp16``, and ``owner``
    (n_memories, M): the index of the training image each stored patch came from, which lets
    ``training_scores`` score every training image without its own patches. ``M`` depends on the data, so
    the buffers start empty and ``_load_from_state_dict`` resizes them to a checkpoint's shape.
    """

    trainable = False
    data_sized_buffers: tuple[str, ...] = ("memory", "owner")

    def __init__(self, dim: int, *, n_memories: int, fp16: bool, top_k: float, aggregate: str = "mean",
                 candidates: int = 0, query_stride: int = 1, refine: float = 0.05, probe: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        # CPU speed-ups (a GPU, and an exported graph, always score every patch exactly):
        self.probe = probe  # < 1: each query searches this fraction of nearest clusters (clustered_search)
        self.seed = seed  # seeds the clusters, so a reloaded memory clusters the same way
        self._clustered: list[ClusteredBank] | None = None  # built on first use, dropped when the memory changes
        self.candidates = candidates  # > 0: bfloat16 shortlist (fast_search); 0: exact float32
        self.query_stride = query_stride  # > 1: coarse-to-fine scoring (coarse_fine) ...
        self.refine = refine  # ... refining this fraction of the lattice's highest patches
        if aggregate not in ("max", "mean"):
            raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        self.dim = dim
        self.top_k = top_k
        self.aggregate = aggregate
        dtype = torch.float16 if fp16 else torch.float32
        self.register_buffer("memory", torch.zeros(n_memories, 0, dim, dtype=dtype))
        self.register_buffer("owner", torch.zeros(n_memories, 0, dtype=torch.int32))

    # -- fitting -------------------------------------------------------------------------------------------
    def _select(self, features: torch.Tensor) -> torch.Tensor:
        """(n_memories, M) indices into ``flat_patches(features)`` of the patches to keep."""
        raise NotImplementedError

    @torch.no_grad()
    def fit_statistics(self, features: torch.Tensor) -> None:
        """Keep the patches chosen by ``_select`` (gathered without flattening the whole feature tensor)."""
        self._check_features(features)
        if features.shape[0] < 2:
            raise ValueError(f"a patch memory needs at least 2 training images, got {features.shape[0]}")
        # Sorted, each memory holds its images' patches in contiguous runs: leave-one-out skips a range.
        index = self._select(features).cpu().sort(dim=1).values
        n_memories = self.memory.shape[0]
        if index.dim() != 2 or index.shape[0] != n_memories:
            raise RuntimeError(f"_select returned shape {tuple(index.shape)}, expected ({n_memories}, M)")
        hw = features.shape[2] * features.shape[3]
        image, position = index // hw, index % hw
        y, x = position // features.shape[3], position % features.shape[3]
        source = features.cpu()
        patches = source[image.reshape(-1), :, y.reshape(-1), x.reshape(-1)].reshape(*index.shape, -1)
        device = self.memory.device
        self.memory = patches.to(device=device, dtype=self.memory.dtype).contiguous()
        self.owner = image.to(device=device, dtype=torch.int32).contiguous()
        self._clustered = None

    @property
    def is_fitted(self) -> bool:
        return self.memory.shape[1] > 0

    def _check_features(self, features: torch.Tensor) -> None:
        if features.dim() != 4 or features.shape[1] != self.dim:
            raise ValueError(f"expected features (N, {self.dim}, h, w), got shape {tuple(features.shape)}")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} has an empty memory: call fit_statistics(features) first")

    # -- scoring -------------------------------------------------------------------------------------------
    def _uses_clusters(self, patches: torch.Tensor) -> bool:
        return (self.probe < 1 and not _exact() and patches.device.type == "cpu"
                and self.memory.shape[1] >= MIN_ROWS)

    def _clustered_banks(self) -> list[ClusteredBank]:
        if self._clustered is None:
            self._clustered = [ClusteredBank(memory, self.probe, owner=owner, seed=self.seed + index)
                               for index, (memory, owner) in enumerate(zip(self.memory, self.owner))]
        return self._clustered

    def _distances(self, patches: torch.Tensor, query_owner: torch.Tensor | None) -> torch.Tensor:
        combined = None
        clustered = self._clustered_banks() if self._uses_clusters(patches) else None
        for index, (memory, owner) in enumerate(zip(self.memory, self.owner)):
            if clustered is not None:
                dist = clustered[index].nearest(patches, query_owner)
            else:
                dist = nearest_distance(patches, memory, query_owner=query_owner,
                                        bank_owner=owner if query_owner is not None else None,
                                        candidates=self.candidates)
            if combined is None:
                combined = dist
            else:
                combined = torch.maximum(combined, dist) if self.aggregate == "max" else combined + dist
        return combined if self.aggregate == "max" else combined / self.memory.shape[0]

    @torch.no_grad()
    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        self._check_features(features)
        return coarse_to_fine(features, lambda patches, _: self._distances(patches, None),
                              stride=self._stride(features), refine=self.refine, min_refine=self._min_refine(features))

    def _min_refine(self, features: torch.Tensor) -> int:
        # Refine at least twice as many lattice patches as the image score averages over.
        return 2 * math.ceil(self.top_k * features.shape[2] * features.shape[3])

    def _stride(self, features: torch.Tensor) -> int:
        # A grid under 24 patches a side (below 192 px) is cheap already and too coarse to skip patches.
        small = min(features.shape[2], features.shape[3]) < 24
        return 1 if _exact() or small or features.device.type != "cpu" else self.query_stride

    @torch.no_grad()
    def training_scores(self, features: torch.Tensor, batch_size: int = 8,
                        progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Leave-one-image-out image scores of the images this head was fitted on (pass the same tensor):
        image i is scored against the stored patches of every image but i, so a defect copied once into
        the training folder scores like an unseen one."""
        return top_k_mean(self.training_patch_scores(features, batch_size, progress), self.top_k)

    @torch.no_grad()
    def training_patch_scores(self, features: torch.Tensor, batch_size: int = 8,
                              progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(N, h, w) leave-one-image-out patch scores of the images this head was fitted on (on the CPU);
        ``progress(done, total)`` after each batch of images."""
        self._check_fitted()
        self._check_features(features)
        if int(self.owner.max()) >= features.shape[0]:
            raise ValueError(f"the memory holds patches of image {int(self.owner.max())} but only "
                             f"{features.shape[0]} images were given: pass the features the head was fitted on")
        device = self.memory.device
        n = features.shape[0]
        out = []
        for start in range(0, n, batch_size):
            batch = features[start:start + batch_size].to(device)
            patch = coarse_to_fine(batch, lambda patches, owner: self._distances(patches, owner.to(device)),
                                   stride=self._stride(batch), refine=self.refine,
                                   min_refine=self._min_refine(batch), first_image=start)
            out.append(patch.cpu())
            if progress is not None:
                progress(min(start + batch_size, n), n)
        return torch.cat(out)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # The bank size M is only known from the checkpoint: resize (keeping dtype, device and every other
        # dimension) and let the strict default loader copy the values and report anything else.
        self._clustered = None
        for name in self.data_sized_buffers:
            saved = state_dict.get(prefix + name)
            current = getattr(self, name)
            if saved is not None and saved.dim() == current.dim() and saved.shape[0] == current.shape[0] \
                    and saved.shape[2:] == current.shape[2:]:
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def memory_size(n_patches: int, patches_per_image: int, fraction: float, max_patches: int) -> int:
    """Patches per memory: ``fraction`` of all, capped at ``max_patches``, and more than one image holds
    (so leave-one-image-out always leaves a neighbour), but never more than exist."""
    size = min(int(math.ceil(fraction * n_patches)), max_patches)
    return min(max(size, patches_per_image + 1), n_patches)

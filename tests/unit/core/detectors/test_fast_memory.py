"""The memory's CPU speed-ups on real tile features: the bfloat16 shortlist gives the exact float32 nearest
distances, the clustered search finds nearly every exact neighbour while searching an eighth of the bank,
coarse-to-fine scoring keeps the image scores and the highest patches, and the fast head ranks images as the
exact one does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from comet_studio.core import AnomalyModel, BackboneConfig, ModelConfig, TrainConfig
from comet_studio.core.config import MemoryConfig
from comet_studio.core.data import scan_folder
from comet_studio.core.detectors.base import top_k_mean
from comet_studio.core.detectors.clustered_search import ClusteredBank
from comet_studio.core.detectors.coarse_fine import coarse_to_fine
from comet_studio.core.detectors.fast_search import ShortlistBank, native_bf16
from comet_studio.core.detectors.memory import MemoryHead
from comet_studio.core.detectors.nearest import flat_patches, nearest_distance

EXACT = MemoryConfig(candidates=0, query_stride=1, probe=1.0)


def _brute(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(Q, M) distances by explicit differences (cdist's matmul path rounds a zero to ~0.04)."""
    return torch.cat([(q[:, None] - bank[None]).square().sum(-1).sqrt() for q in queries.split(64)])


@pytest.fixture(scope="module")
def tiles(planted_folder):
    """Features (27, D, 16, 16) of 24 good tiles and 3 painted defects (the last three)."""
    root, _ = planted_folder
    model = AnomalyModel(ModelConfig(backbone=BackboneConfig(image_size=128)), train=TrainConfig(device="cpu"))
    return model.extract(scan_folder(root).paths)


def test_shortlist_finds_the_exact_nearest_distance(tiles):
    patches = flat_patches(tiles).float()
    bank = patches[torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))[:1000]]
    queries = patches[:700]
    exact = _brute(queries, bank).min(dim=1).values
    got = ShortlistBank(bank, candidates=4).nearest_squared(queries).sqrt()
    assert torch.allclose(got, exact, rtol=1e-4, atol=1e-3)


def test_shortlist_skips_rows_by_range_and_by_mask(tiles):
    patches = flat_patches(tiles[:6]).float()  # image i owns rows i*256 ... (i+1)*256 - 1
    owner = torch.arange(6, dtype=torch.int32).repeat_interleave(256)
    queries, query_owner = patches[::7], owner[::7]
    full = _brute(queries, patches)
    full[query_owner[:, None] == owner[None, :]] = math.inf
    expected = full.min(dim=1).values
    prepared = ShortlistBank(patches, candidates=4)
    ranges = [(int(q0), int(q1), int(o) * 256, (int(o) + 1) * 256)
              for o in range(6) for q0, q1 in [_run(query_owner, o)]]
    assert torch.allclose(prepared.nearest_squared(queries, skip=ranges).sqrt(), expected, rtol=1e-4)
    mask = query_owner[:, None] == owner[None, :]
    assert torch.allclose(prepared.nearest_squared(queries, skip_mask=mask).sqrt(), expected, rtol=1e-4)
    # The public search gives the same, whichever path this CPU takes.
    got = nearest_distance(queries, patches, query_owner=query_owner, bank_owner=owner, candidates=4)
    assert torch.allclose(got, expected, rtol=1e-4)


def _run(owner: torch.Tensor, value: int) -> tuple[int, int]:
    where = torch.nonzero(owner == value).flatten()
    return int(where[0]), int(where[-1]) + 1


def test_a_query_with_nothing_left_is_infinitely_far():
    bank = torch.randn(10, 4)
    got = ShortlistBank(bank, candidates=2).nearest_squared(bank[:3], skip=[(0, 3, 0, 10)])
    assert torch.isinf(got).all()


def test_coarse_to_fine_scores_the_lattice_and_the_top_exactly(tiles):
    head = MemoryHead(tiles.shape[1], EXACT, seed=0)
    head.fit_statistics(tiles[:20])
    exact = head.patch_scores(tiles[20:])

    def score(patches, _owner):
        return head._distances(patches, None)

    fast = coarse_to_fine(tiles[20:], score, stride=2, refine=0.05)
    assert torch.equal(fast[:, ::2, ::2], exact[:, ::2, ::2])  # the lattice is scored exactly
    # Each image's highest patch is the exact one; its top-k means (the memory's image score among them) are
    # within the fast memory's stated tolerance (0.5%, as for the training scores below).
    assert torch.allclose(fast.flatten(1).max(dim=1).values, exact.flatten(1).max(dim=1).values)
    for top_k in (0.01, MemoryConfig().top_k):
        assert torch.allclose(top_k_mean(fast, top_k), top_k_mean(exact, top_k), rtol=5e-3)
    # Refining everything is the exact map; stride 1 is the plain full pass.
    assert torch.allclose(coarse_to_fine(tiles[20:], score, stride=2, refine=1.0), exact)
    assert torch.allclose(coarse_to_fine(tiles[20:], score, stride=1, refine=0.05), exact)


@pytest.fixture(scope="module")
def tiles_256(planted_folder):
    root, _ = planted_folder
    model = AnomalyModel(ModelConfig(), train=TrainConfig(device="cpu"))
    return model.extract(scan_folder(root).paths)


def test_fast_memory_ranks_like_the_exact_one(tiles_256):
    """Default (bfloat16 shortlist + coarse-to-fine at 256 px) against exact: leave-one-out training
    scores and test scores agree to 0.5% (most exactly) and the painted defects still rank highest."""
    heads = [MemoryHead(tiles_256.shape[1], config, seed=0) for config in (EXACT, MemoryConfig(probe=1.0))]
    for head in heads:
        head.fit_statistics(tiles_256)
    assert heads[1]._stride(tiles_256) == 2
    exact, fast = (head.training_scores(tiles_256).numpy() for head in heads)
    assert np.allclose(fast, exact, rtol=5e-3)
    assert np.mean(np.isclose(fast, exact, rtol=1e-4)) >= 0.75
    assert set(np.argsort(fast)[-3:]) == {24, 25, 26}
    test_exact, test_fast = (head.image_scores(tiles_256[::3]).numpy() for head in heads)
    assert np.allclose(test_fast, test_exact, rtol=5e-3)


def test_small_grids_gpus_and_exports_score_every_patch(tiles, tiles_256):
    head = MemoryHead(tiles.shape[1], MemoryConfig(), seed=0)
    assert head._stride(tiles_256) == 2
    assert head._stride(tiles) == 1  # 16 x 16 patches: cheap already
    assert head._stride(tiles_256.to("meta")) == 1  # any non-CPU device: exact, every patch


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16: the exact search is used")
def test_native_bfloat16_is_used_when_it_is_faster():
    assert native_bf16() is True


def _owned_patches(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = features.shape
    return flat_patches(features).float(), torch.arange(n, dtype=torch.int32).repeat_interleave(h * w)


def test_clustered_search_probing_every_cluster_is_exact(tiles):
    patches, owner = _owned_patches(tiles[:8])
    bank = ClusteredBank(patches, probe=1.0, owner=owner, seed=0)
    unseen = flat_patches(tiles[8:10]).float()
    assert torch.allclose(bank.nearest(unseen), _brute(unseen, patches).min(dim=1).values, rtol=1e-4)
    queries, query_owner = patches[::5], owner[::5]
    full = _brute(queries, patches)
    full[query_owner[:, None] == owner[None, :]] = math.inf  # leave-one-image-out
    assert torch.allclose(bank.nearest(queries, query_owner), full.min(dim=1).values, rtol=1e-4, atol=1e-3)


def test_clustered_search_finds_nearly_every_neighbour_in_an_eighth_of_the_bank(tiles_256):
    patches, owner = _owned_patches(tiles_256[:24])  # good tiles only: 24,576 stored patches
    keep = torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))[:8000]
    bank, bank_owner = patches[keep], owner[keep].sort().values
    bank = patches[keep[owner[keep].argsort(stable=True)]]
    queries = flat_patches(tiles_256[24:]).float()  # the three painted defects, never stored
    exact = _brute(queries, bank).min(dim=1).values
    clustered = ClusteredBank(bank, probe=0.125, owner=bank_owner, seed=0)
    assert clustered.n_probe == math.ceil(0.125 * math.ceil(8000 / 200))
    got = clustered.nearest(queries)
    assert (got >= exact * (1 - 1e-4)).all()  # never nearer than the true neighbour
    assert torch.isclose(got, exact, rtol=1e-4).float().mean() >= 0.9
    image_got, image_exact = (top_k_mean(d.view(3, 32, 32), 0.01) for d in (got, exact))
    assert torch.allclose(image_got, image_exact, rtol=1e-2)
    again = ClusteredBank(bank, probe=0.125, owner=bank_owner, seed=0).nearest(queries)
    assert torch.equal(got, again)  # seeded k-means: the same clusters every time


def test_the_clustered_memory_ranks_like_the_exact_one_and_reloads_identically(tiles_256):
    config = MemoryConfig(fraction=0.2)  # 5,530 patches a memory: above the size searched exactly
    exact_head = MemoryHead(tiles_256.shape[1], MemoryConfig(fraction=0.2, candidates=0, query_stride=1,
                                                             probe=1.0), seed=0)
    head = MemoryHead(tiles_256.shape[1], config, seed=0)
    for h in (exact_head, head):
        h.fit_statistics(tiles_256)
    assert head._uses_clusters(flat_patches(tiles_256[:1]))
    exact, fast = exact_head.training_scores(tiles_256).numpy(), head.training_scores(tiles_256).numpy()
    error = np.abs(fast - exact) / exact
    # Most images within 0.5% (0.37% measured on the default zero-padded features, 0.2% on "inside" ones),
    # none off by 5%.
    assert np.median(error) < 5e-3 and error.max() < 0.05
    assert set(np.argsort(fast)[-3:]) == {24, 25, 26}
    test = tiles_256[::3]
    test_error = np.abs(head.image_scores(test).numpy() / exact_head.image_scores(test).numpy() - 1)
    assert np.median(test_error) < 2e-2 and test_error.max() < 0.05  # 1.5% median on the zero-padded default
    reloaded = MemoryHead(tiles_256.shape[1], config, seed=0)
    reloaded.load_state_dict(head.state_dict())
    assert torch.equal(reloaded.patch_scores(test), head.patch_scores(test))


def test_probe_out_of_range_is_refused():
    with pytest.raises(ValueError, match="probe must be in"):
        MemoryConfig(probe=0.0)
    with pytest.raises(ValueError, match="probe must be in"):
        ClusteredBank(torch.randn(10, 4), probe=1.5)

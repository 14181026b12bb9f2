"""Screen variants of the trust opinion: how many planted copies it ranks highest, before any training.

For each data set, contamination level and seed, the bench's ``overlap`` folder is built (magnetic tile capped at
200 training tiles, as in the bench), the default detector's features are read from (or written to) a cache, and
every variant scores the training images leave-one-out. A row: the share of the planted copies among the n
highest scores (n = the number of copies; the opinion's ranking power) and the precision / recall of the default
image fence on those scores. A screen, not a bench result: no detector is fitted.

Variants (a JSON list): ``{"tag": "default"}`` is the product's opinion; ``{"tag": ..., "trust": {...}}`` the
opinion with ``TrustConfig`` fields changed (e.g. ``{"pool": 1}``); ``{"tag": ..., "kind": "bag", "f": 0.1, "B":
16, "agg": "mean"}`` image bagging: B memories each holding all pooled patches of a random f of the *images*, every
image scored against the memories that do not hold it (the distances combined by ``agg``), so that a group of
similar defects is absent from some memories altogether.

    python docs/results/opinion_probe.py '[{"tag": "default"}, {"tag": "pool1", "trust": {"pool": 1}}]' \
        --sets cookies,elpv,magnetic_tile --noise 0.1,0.2 --seeds 0,1,2 --out opinion_probe.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from comet_studio.core.config import ModelConfig, TrustConfig
from comet_studio.core.data import contaminate
from comet_studio.core.data.mvtec import load_mvtec
from comet_studio.core.detectors.base import top_k_mean
from comet_studio.core.detectors.nearest import nearest_distance
from comet_studio.core.training.opinion import fenced_out, memory_opinion
from comet_studio.workflows.bench.cell import cap_train
from comet_studio.workflows.bench.features import load_or_extract

DATA = {"cookies": "../shared/data/cookies", "elpv": "bench/data/elpv", "magnetic_tile": "../shared/data/magnetic_tile"}
MAX_TRAIN = {"magnetic_tile": 200}


def bagged_scores(features: torch.Tensor, *, f: float, B: int, agg: str, seed: int, top_k: float = 0.05) -> np.ndarray:
    """(N,) image scores of image bagging on the 2x2-pooled grid (see the module docstring)."""
    pooled = F.avg_pool2d(features.float(), 2, ceil_mode=True)
    n, d, h, w = pooled.shape
    flat = pooled.permute(0, 2, 3, 1).reshape(n, h * w, d)
    generator = torch.Generator().manual_seed(seed)
    per_image: list[list[torch.Tensor]] = [[] for _ in range(n)]
    size = max(2, round(f * n))
    for _ in range(B):
        inside = torch.randperm(n, generator=generator)[:size]
        bank = flat[inside].reshape(-1, d)
        outside = torch.ones(n, dtype=torch.bool)
        outside[inside] = False
        queries = torch.nonzero(outside).flatten()
        for start in range(0, len(queries), 32):
            batch = queries[start:start + 32]
            distances = nearest_distance(flat[batch].reshape(-1, d), bank).reshape(len(batch), h, w)
            for row, image in enumerate(batch.tolist()):
                per_image[image].append(distances[row])
    combine = {"mean": lambda s: s.mean(0), "max": lambda s: s.max(0).values, "median": lambda s: s.median(0).values}
    maps = torch.stack([combine[agg](torch.stack(maps)) if maps else torch.zeros(h, w) for maps in per_image])
    return top_k_mean(maps, top_k).numpy().astype(np.float64)


def variant_scores(features: torch.Tensor, variant: dict, seed: int) -> np.ndarray:
    if variant.get("kind") == "bag":
        return bagged_scores(features, f=variant["f"], B=variant["B"], agg=variant.get("agg", "mean"), seed=seed)
    return memory_opinion(features, TrustConfig(**variant.get("trust", {})), seed=seed).image_scores


def _append(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", help="JSON list of variants")
    parser.add_argument("--sets", default="cookies,elpv,magnetic_tile")
    parser.add_argument("--noise", default="0.1,0.2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=None, help='JSON {"set": folder} overriding the default folders')
    parser.add_argument("--cache", default="bench/opinion_probe_features")
    parser.add_argument("--out", required=True, help="CSV file the rows are appended to")
    args = parser.parse_args()
    variants = json.loads(args.variants)
    folders = {**DATA, **(json.loads(args.data) if args.data else {})}
    backbone = ModelConfig(detector="memory").backbone
    for name in args.sets.split(","):
        dataset = cap_train(load_mvtec(folders[name]), MAX_TRAIN.get(name))
        paths = list(dataset.train) + [item.path for item in dataset.test]
        store, _ = load_or_extract(args.cache, name, paths, backbone)
        for noise in (float(x) for x in args.noise.split(",")):
            for seed in (int(x) for x in args.seeds.split(",")):
                data = contaminate(dataset, noise, seed=seed, protocol="overlap")
                features = store.take(data.train)
                planted = np.isin(np.asarray(data.train), np.asarray(data.planted))
                for variant in variants:
                    start = time.perf_counter()
                    scores = variant_scores(features, variant, seed)
                    highest = np.argsort(-scores)[:planted.sum()]
                    flagged = fenced_out(scores, TrustConfig())
                    row = {"set": name, "noise": noise, "seed": seed, "variant": variant["tag"],
                           "copies_among_highest": round(float(planted[highest].mean()), 3),
                           "fence_precision": round(float(planted[flagged].mean()), 3) if flagged.any() else None,
                           "fence_recall": round(float(flagged[planted].mean()), 3), "n_flagged": int(flagged.sum()),
                           "n_planted": int(planted.sum()), "seconds": round(time.perf_counter() - start, 1)}
                    print(json.dumps(row), flush=True)
                    _append(Path(args.out), row)


if __name__ == "__main__":
    main()

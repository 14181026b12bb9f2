"""Peers in the bench (``comet-studio bench ... --peers anomalib``): anomalib's PatchCore and PaDiM on every
cell's own data, beside our default, timed in the same run.

For each (category, noise, seed, protocol) of the grid this plants the same contamination as the grid's cells
(``contaminate(cap_train(...))``: same training folder, planted copies included, same test images), then, one
after the other in this process (same threads, device and machine, minutes apart):

1. fits **our default** (``DEFAULT_STRATEGY`` on ``DEFAULT_DETECTOR``) end to end from the image files (decoding and
   feature extraction included, as anomalib's fit includes them) and times its prediction of the test images;
2. fits and times each peer model (``anomalib_peer.py``) the same way.

Outputs in the bench folder: one ``results.csv`` row per peer model and cell (model ``anomalib-patchcore`` /
``anomalib-padim``, method ``baseline``), its metrics computed by *our* ``core.evaluation`` from *their* image
scores and maps; ``peers.csv`` with both sides' timings, the speed ratios (``fit_speedup`` = their fit seconds /
ours, ``predict_speedup`` = our img/s / theirs: above 1 = ours faster) and anomalib's own metrics on the same
predictions; ``peers.md``, the summary. Finished rows are skipped when the bench is run again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ...core.data import ContaminatedSet, contaminate, load_mvtec
from ...core.detectors.registry import DEFAULT_DETECTOR
from ...core.evaluation import aupro, f1_max, image_auroc, pixel_auroc
from ...core.evaluation.evaluate import read_masks
from ...core.features import resolve_device
from ...core.io.atomic import write_csv_atomic, write_text_atomic
from ...core.model import AnomalyModel
from ...core.training.presets import DEFAULT_STRATEGY
from .grid import BenchConfig, Cell, build_cells, cell_configs, find_categories
from .report import write_report
from .runner import METRIC_COLUMNS, _row_key, _write_results, cap_train, read_results, read_rows

__all__ = ["PEERS", "PEER_COLUMNS", "OURS", "check_peers", "run_peers", "read_peer_rows", "write_peer_rows",
           "peer_key", "peers_markdown"]

PEERS = ("anomalib",)
OURS = (DEFAULT_DETECTOR, DEFAULT_STRATEGY)  # the default the peers are timed against
GROUP_KEY = ("category", "noise", "seed", "protocol")
SHARED = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
PEER_COLUMNS = ("category", "model", "noise", "seed", "protocol", "fit_seconds", "predict_images_per_second",
                "ours_model", "ours_method", "ours_fit_seconds", "ours_predict_images_per_second", "ours_image_auroc",
                "fit_speedup", "predict_speedup", "threads", "device", "n_train", "n_test",
                *(f"anomalib_{m}" for m in SHARED), "error", "finished")
Progress = Callable[[str, int, int], None]


def check_peers(peers: Sequence[str]) -> tuple[str, ...]:
    """The peer models of ``peers`` (only ``anomalib`` so far); raises ValueError for an unknown name and
    ``PeersUnavailableError`` (an ImportError, with the install command) when the extra is missing."""
    from .anomalib_peer import PEER_MODELS, import_anomalib

    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
    import_anomalib()
    return PEER_MODELS


@dataclass(frozen=True)
class _Timed:
    fit_seconds: float
    predict_images_per_second: float
    scores: np.ndarray
    maps: np.ndarray


def _ours(cell: Cell, data: ContaminatedSet, config: BenchConfig) -> _Timed:
    """Our default fitted and run end to end from the files: the same work a user's ``train`` does."""
    model_config, train_config = cell_configs(Cell(cell.category, *OURS, cell.noise, cell.seed, cell.protocol),
                                              config)
    model = AnomalyModel(model_config, train=train_config)
    start = time.perf_counter()
    model.fit(list(data.train))
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    prediction = model.predict([i.path for i in data.test])
    seconds = time.perf_counter() - start
    return _Timed(fit_seconds, len(data.test) / seconds, np.asarray(prediction.image_score),
                  np.asarray(prediction.anomaly_map))


def _peer(name: str, state: dict, data: ContaminatedSet, config: BenchConfig, seed: int) -> _Timed:
    from .anomalib_peer import build_peer, fit_peer, predict_peer

    module = build_peer(name, state, image_size=config.image_size, seed=seed, device=resolve_device(config.device))
    fit_seconds = fit_peer(module, data.train, image_size=config.image_size)
    prediction = predict_peer(module, [i.path for i in data.test], image_size=config.image_size)
    return _Timed(fit_seconds, len(data.test) / prediction.seconds, prediction.scores, prediction.maps)


def _metrics(labels: np.ndarray, masks: np.ndarray, scores: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Our metrics (``core.evaluation``), exactly as the grid's cells compute them."""
    has_masks = bool(masks.any())
    return {"image_auroc": image_auroc(labels, scores), "f1_max": f1_max(labels, scores),
            "pixel_auroc": pixel_auroc(masks, maps) if has_masks else math.nan,
            "aupro": aupro(masks, maps) if has_masks else math.nan}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _rows(cell: Cell, name: str, data: ContaminatedSet, ours: _Timed | str, state: dict,
          config: BenchConfig) -> tuple[dict, dict]:
    """(results.csv row, peers.csv row) of one peer model on one cell; a failure goes into both rows' error."""
    from .anomalib_peer import PeerPrediction, anomalib_metrics

    row: dict = {c: math.nan for c in METRIC_COLUMNS}
    row.update(category=cell.category, model=name, method="baseline", noise=cell.noise, seed=cell.seed,
               protocol=cell.protocol, n_train=len(data.train), n_planted=len(data.planted), n_test=len(data.test),
               error="")
    peer = {c: math.nan for c in PEER_COLUMNS}
    peer.update(category=cell.category, model=name, noise=cell.noise, seed=cell.seed, protocol=cell.protocol,
                ours_model=OURS[0], ours_method=OURS[1], threads=torch.get_num_threads(),
                device=str(resolve_device(config.device)), n_train=len(data.train), n_test=len(data.test), error="")
    try:
        if isinstance(ours, str):
            raise RuntimeError(f"our default failed on this cell, so there is nothing to time it against: {ours}")
        timed = _peer(name, state, data, config, cell.seed)
        labels = np.array([i.label for i in data.test])
        masks = read_masks(data.test, timed.maps.shape[-1])
        row.update(_metrics(labels, masks, timed.scores, timed.maps), fit_seconds=timed.fit_seconds,
                   predict_images_per_second=timed.predict_images_per_second)
        theirs = anomalib_metrics(labels, masks, PeerPrediction(timed.scores, timed.maps, 0.0))
        peer.update({f"anomalib_{k}": v for k, v in theirs.items()})
        peer.update(fit_seconds=timed.fit_seconds, predict_images_per_second=timed.predict_images_per_second,
                    ours_fit_seconds=ours.fit_seconds, ours_predict_images_per_second=ours.predict_images_per_second,
                    ours_image_auroc=image_auroc(labels, ours.scores),
                    fit_speedup=timed.fit_seconds / ours.fit_seconds,
                    predict_speedup=ours.predict_images_per_second / timed.predict_images_per_second)
    except Exception as error:  # noqa: BLE001 - one broken cell must not stop the grid
        row["error"] = peer["error"] = f"{type(error).__name__}: {error}".replace("\n", " ")
    row["finished"] = peer["finished"] = _now()
    return row, peer


def read_peer_rows(path: str | Path) -> list[dict]:
    """Rows of a peers.csv with numbers parsed."""
    rows = read_rows(path)
    text = {"category", "model", "protocol", "ours_model", "ours_method", "device", "error", "finished"}
    for row in rows:
        for key in PEER_COLUMNS:
            if key not in text:
                row[key] = float(row[key]) if row.get(key, "") != "" else math.nan
        row["seed"] = int(row["seed"])
    return rows


def peer_key(row: dict) -> tuple:
    """The identity of a peers.csv row (noise rounded, as results.csv's)."""
    return (row["category"], row["model"], f"{float(row['noise']):.6g}", int(row["seed"]), row["protocol"])


def write_peer_rows(path: Path, rows: list[dict]) -> None:
    """Replace peers.csv with ``rows`` (sorted, atomically)."""
    write_csv_atomic(path, sorted(rows, key=peer_key), PEER_COLUMNS, extrasaction="ignore")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def peers_markdown(rows: list[dict]) -> str:
    """peers.md: per category, peer, protocol and noise, the mean over seeds of both sides' timings, the speed
    ratios, and every metric where anomalib's own value differs from ours by more than 0.001."""
    lines = ["# Peers, timed in the same run", "",
             f"Ours = {OURS[0]} + {OURS[1]}, fitted end to end from the files (decoding and feature extraction "
             "included, as in anomalib's fit). fit speed-up = their fit s / ours; predict speed-up = our img/s / "
             "theirs (end to end: decoding, resizing, model, map). Above 1: ours faster.", "",
             "| category | peer | protocol | noise | seeds | fit s (theirs) | fit s (ours) | fit speed-up | "
             "img/s (theirs) | img/s (ours) | predict speed-up | threads |", "|" + "---|" * 12]
    ok = [r for r in rows if not r["error"]]
    groups = dict.fromkeys((r["category"], r["model"], r["protocol"], r["noise"]) for r in ok)
    for key in sorted(groups):
        members = [r for r in ok if (r["category"], r["model"], r["protocol"], r["noise"]) == key]
        values = [_mean([r[c] for r in members]) for c in ("fit_seconds", "ours_fit_seconds", "fit_speedup",
                                                            "predict_images_per_second",
                                                            "ours_predict_images_per_second", "predict_speedup")]
        threads = "/".join(sorted({f"{r['threads']:g}" for r in members}))
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} | {len(members)} | "
                     + " | ".join(f"{v:.2f}" for v in values) + f" | {threads} |")
    lines += ["", "Failed peer cells: " + (", ".join(f"{r['category']}/{r['model']}/noise {r['noise']:g}/seed "
                                                      f"{r['seed']}: {r['error']}" for r in rows if r["error"])
                                            or "none"), ""]
    return "\n".join(lines)


def _metric_differences(peer_rows: list[dict], results: list[dict]) -> list[str]:
    """Lines for every (cell, metric) where anomalib's own metric and ours (on the same predictions) differ by
    more than 0.001: both values, once."""
    ours = {_row_key(r): r for r in results}
    lines = []
    for peer in (p for p in peer_rows if not p["error"]):
        row = ours.get((peer["category"], peer["model"], "baseline", f"{peer['noise']:.6g}", peer["seed"],
                        peer["protocol"]))
        if row is None:
            continue
        for metric in SHARED:
            a, b = row[metric], peer[f"anomalib_{metric}"]
            if not (math.isnan(a) and math.isnan(b)) and not abs(a - b) <= 0.001:
                lines.append(f"| {peer['category']} | {peer['model']} | {peer['protocol']} | {peer['noise']:g} | "
                             f"{peer['seed']} | {metric} | {a:.4f} | {b:.4f} |")
    if not lines:
        return ["Our metrics and anomalib's own agree within 0.001 on every peer cell.", ""]
    return (["Where anomalib's own metric differs from ours (same scores and maps):", "",
             "| category | peer | protocol | noise | seed | metric | ours | anomalib's |", "|" + "---|" * 8]
            + lines + [""])


def run_peers(data_root: str | Path, out_dir: str | Path, config: BenchConfig, *, peers: Sequence[str] = PEERS,
              progress: Progress | None = None, png: bool = True) -> list[dict]:
    """Run every peer model on every (category, noise, seed, protocol) of ``config``'s grid that ``out_dir``
    does not already hold as finished rows, add the rows to results.csv and peers.csv, and rewrite the report
    (results.md) and peers.md. Returns the peers.csv rows. Call it after ``run_bench`` on the same folder."""
    from .anomalib_peer import lite0_timm_state

    models = check_peers(peers)
    categories = find_categories(data_root, config.categories)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path, peers_path = out / "results.csv", out / "peers.csv"
    results = {_row_key(r): r for r in read_results(results_path)}
    peer_rows = {peer_key(r): r for r in read_peer_rows(peers_path)}
    groups = list(dict.fromkeys(Cell(c.category, "", "", c.noise, c.seed, c.protocol)
                                for c in build_cells(list(categories), config)))

    def pending(cell: Cell) -> list[str]:
        return [m for m in models
                if (key := peer_key({"category": cell.category, "model": m, "noise": cell.noise, "seed": cell.seed,
                                      "protocol": cell.protocol})) not in peer_rows or peer_rows[key]["error"]]

    todo = [g for g in groups if pending(g)]
    state = lite0_timm_state() if todo else {}
    for done, cell in enumerate(todo):
        if progress is not None:
            progress("peer cells", done, len(todo))
        dataset = cap_train(load_mvtec(categories[cell.category]), config.max_train)
        data = contaminate(dataset, cell.noise, seed=cell.seed, protocol=cell.protocol)  # type: ignore[arg-type]
        try:
            ours: _Timed | str = _ours(cell, data, config)
        except Exception as error:  # noqa: BLE001 - recorded in the peer rows' error
            ours = f"{type(error).__name__}: {error}"
        for name in pending(cell):
            row, peer = _rows(cell, name, data, ours, state, config)
            results[_row_key(row)] = row
            peer_rows[peer_key(peer)] = peer
            _write_results(results_path, list(results.values()))
            write_peer_rows(peers_path, list(peer_rows.values()))
    if progress is not None:
        progress("peer cells", len(todo), len(todo))
    all_rows = read_results(results_path)
    write_report(out, all_rows, settings=config.settings(), png=png)
    rows = read_peer_rows(peers_path)
    write_text_atomic(out / "peers.md", peers_markdown(rows) + "\n" + "\n".join(_metric_differences(rows, all_rows)))
    return rows

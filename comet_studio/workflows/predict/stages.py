"""The stages of batch prediction, each a function of a column batch (a dict of numpy arrays), and the table
they end in. ``batch_predict.py`` runs them in this process; ``ray_predict.py`` hands them to Ray Data. Kept
apart from both so that neither driver imports the other.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ...core.data.images import ImageReadError, read_image
from ...core.data.transforms import load_resized
from .predictor import Predictor
from ...viz.overlays import overlay_heatmap

__all__ = ["TableFormat", "TABLE_COLUMNS", "PredictSummary", "input_size", "decode_batch",
           "score_batch", "heatmap_name", "write_heatmaps", "TableWriter", "prepare_out"]

TableFormat = Literal["csv", "parquet"]
TABLE_COLUMNS = ("path", "score", "raw_score", "label", "heatmap", "error")


@dataclass(frozen=True)
class PredictSummary:
    table: Path
    scored: int
    failed: int  # rows with an error (unreadable or not an image)
    heatmaps: Path | None


def input_size(predictor: Predictor) -> int:
    """The square input size a predictor resizes images to (``AnomalyModel`` or ``OnnxPredictor``)."""
    size = getattr(predictor, "image_size", None)
    return int(size) if size is not None else int(predictor.config.backbone.image_size)  # type: ignore[attr-defined]


def _resolve(path: str, base: str) -> str:
    # Relative paths were listed relative to the driver's working directory, which a worker may not share.
    return os.path.join(base, path)


def _text(column: np.ndarray) -> np.ndarray:
    # A copy as Python strings: a fixed-width numpy string column (what Arrow may hand back) would cut a
    # longer message written into it.
    return np.array([str(v) for v in column], dtype=object)


def decode_batch(batch: dict[str, np.ndarray], *, size: int, base: str) -> dict[str, np.ndarray]:
    """Read and resize every image of the batch to ``size`` (the model's own resize, so predicting the
    result equals predicting the file); a file that cannot be read gets its ``error`` and a blank image."""
    n = len(batch["path"])
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    errors = _text(batch["error"])
    for i, (path, error) in enumerate(zip(batch["path"], errors)):
        if error:
            continue
        try:
            images[i] = load_resized(_resolve(path, base), size)
        except ImageReadError as exc:
            errors[i] = str(exc)
    return {**batch, "error": errors, "image": images}


def score_batch(predictor: Predictor, batch: dict[str, np.ndarray], *, maps: bool) -> dict[str, np.ndarray]:
    """Score the decoded images (rows without an error); ``maps`` keeps the heatmaps for ``write_heatmaps``."""
    images = batch["image"]
    ok = np.array([not e for e in batch["error"]], dtype=bool)
    n = len(ok)
    score = np.full(n, np.nan)
    raw = np.full(n, np.nan)
    label = np.array([""] * n, dtype=object)
    out = {k: v for k, v in batch.items() if k != "image"}
    heat = np.zeros((n, *images.shape[1:3]), dtype=np.float32) if maps else None
    if ok.any():
        prediction = predictor.predict(list(images[ok]))
        score[ok], raw[ok] = prediction.scores, prediction.raw_scores
        label[ok] = np.where(prediction.labels, "anomalous", "good")
        if heat is not None:
            heat[ok] = prediction.maps
    out.update(score=score, raw_score=raw, label=label)
    if heat is not None:
        out["map"] = heat
    return out


_SURROGATES = re.compile("[\ud800-\udfff]")


def heatmap_name(index: int, path: str) -> str:
    """``<index:06d>_<stem>.png``; the undecodable bytes of a non-UTF-8 name (surrogates in the str, on which
    OpenCV crashes) become ``_``."""
    return f"{index:06d}_{_SURROGATES.sub('_', Path(path).stem)}.png"


def _utf8(text: str) -> str:
    # Parquet strings must be valid UTF-8: a non-UTF-8 name's raw bytes are shown as \xff escapes.
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def write_heatmaps(batch: dict[str, np.ndarray], *, heat_dir: str, base: str) -> dict[str, np.ndarray]:
    """Blend each map over its original image (read again: only the resized copy travelled) and write it;
    the ``heatmap`` column names the file, relative to the output folder."""
    names = np.array([""] * len(batch["path"]), dtype=object)
    errors = _text(batch["error"])
    for i, (index, path, error) in enumerate(zip(batch["index"], batch["path"], errors)):
        if error:
            continue
        try:
            image = read_image(_resolve(path, base))
        except ImageReadError as exc:  # changed on disk since it was scored
            errors[i] = f"heatmap: {exc}"
            continue
        name = heatmap_name(int(index), path)
        overlay = overlay_heatmap(image, batch["map"][i])
        cv2.imwrite(os.path.join(heat_dir, name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        names[i] = f"{Path(heat_dir).name}/{name}"
    return {**{k: v for k, v in batch.items() if k != "map"}, "error": errors, "heatmap": names}


class TableWriter:
    """Rows appended batch by batch to ``predictions.csv`` or ``.parquet``; the file appears (atomically)
    on ``close``, so an interrupted run never leaves a table that looks complete."""

    def __init__(self, out_dir: Path, fmt: TableFormat) -> None:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"format must be csv or parquet, got {fmt!r}")
        self.path = out_dir / f"predictions.{fmt}"
        self._tmp = out_dir / f".predictions.{fmt}.tmp"
        self.format = fmt
        self.scored = self.failed = 0
        if fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as error:
                raise RuntimeError(f"--format parquet needs pyarrow ({error}): pip install pyarrow") from error
            self._pa = pa
            schema = pa.schema([("path", pa.string()), ("score", pa.float64()), ("raw_score", pa.float64()),
                                ("label", pa.string()), ("heatmap", pa.string()), ("error", pa.string())])
            self._parquet = pq.ParquetWriter(self._tmp, schema)
        else:
            # surrogateescape: a non-UTF-8 name is written with its raw bytes, as on disk
            self._handle = open(self._tmp, "w", newline="", encoding="utf-8", errors="surrogateescape")
            self._csv = csv.writer(self._handle)
            self._csv.writerow(TABLE_COLUMNS)

    def write(self, batch: dict[str, np.ndarray]) -> int:
        n = len(batch["path"])
        heatmap = batch.get("heatmap", np.array([""] * n, dtype=object))
        failed = sum(1 for e in batch["error"] if e)
        self.failed += failed
        self.scored += n - failed
        if self.format == "parquet":
            columns = {"path": batch["path"], "score": batch["score"], "raw_score": batch["raw_score"],
                       "label": batch["label"], "heatmap": heatmap, "error": batch["error"]}
            table = self._pa.table({k: [_utf8(str(x)) for x in v] if v.dtype == object else v
                                    for k, v in columns.items()})
            self._parquet.write_table(table.cast(self._parquet.schema))
            return n
        for i in range(n):
            ok = not batch["error"][i]
            self._csv.writerow([batch["path"][i], f"{batch['score'][i]:.6f}" if ok else "",
                                f"{batch['raw_score'][i]:.6g}" if ok else "", batch["label"][i], heatmap[i],
                                batch["error"][i]])
        return n

    def close(self) -> Path:
        if self.format == "parquet":
            self._parquet.close()
        else:
            self._handle.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial table (an error or Ctrl-C)."""
        if self.format == "parquet":
            self._parquet.close()
        else:
            self._handle.close()
        self._tmp.unlink(missing_ok=True)


def prepare_out(out_dir: str | Path, heatmaps: bool) -> tuple[Path, Path | None]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heat_dir = out / "heatmaps" if heatmaps else None
    if heat_dir is not None:
        heat_dir.mkdir(exist_ok=True)
    return out, heat_dir

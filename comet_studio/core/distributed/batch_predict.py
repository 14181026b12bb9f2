"""Streaming prediction over many images, the same on every engine: listing -> decode -> score -> heatmaps
-> one table.

Each stage is a function of a column batch (a dict of numpy arrays: ``index``, ``path``, ``error``, then
``image``, then ``score``/``raw_score``/``label``/``map``, then ``heatmap``). ``predict_images`` runs the
stages in this process (``engine="local"``) or hands them to Ray Data (``engine="ray"``,
``ray_predict.py``); both write the same files::

    predictions.csv | predictions.parquet   path, score, raw_score, label, heatmap, error (listing order)
    heatmaps/<index:06d>_<stem>.png          overlays at the original resolution (with ``heatmaps=True``)

A file that cannot be read gets a row with its ``error``; it never stops the run.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ..data.images import ImageReadError, read_image
from ..data.transforms import load_resized
from ..predict import Predictor, load_predictor
from ..visualize import overlay_heatmap
from .engine import ENGINES, make_engine, require_ray
from .listing import iter_blocks, iter_listing, to_columns

__all__ = ["TableFormat", "TABLE_COLUMNS", "PredictSummary", "input_size", "decode_batch", "score_batch",
           "write_heatmaps", "TableWriter", "predict_images", "predict_local"]

TableFormat = Literal["csv", "parquet"]
TABLE_COLUMNS = ("path", "score", "raw_score", "label", "heatmap", "error")
Progress = Callable[[int], None]  # rows written so far (the total is unknown while the listing streams)


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


def _prepare_out(out_dir: str | Path, heatmaps: bool) -> tuple[Path, Path | None]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heat_dir = out / "heatmaps" if heatmaps else None
    if heat_dir is not None:
        heat_dir.mkdir(exist_ok=True)
    return out, heat_dir


def _decoded_blocks(inputs: Sequence[str | Path], batch_size: int, size: int, base: str
                    ) -> Iterator[dict[str, np.ndarray]]:
    """Decoded blocks in order; the next block decodes in a background thread while the caller scores this
    one (decoding and resizing release the GIL), as Ray's decode tasks run beside its actors."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = None
        for block in iter_blocks(iter_listing(inputs), batch_size):
            future = pool.submit(decode_batch, to_columns(block), size=size, base=base)
            if ahead is not None:
                yield ahead.result()
            ahead = future
        if ahead is not None:
            yield ahead.result()


def predict_local(predictor: Predictor, inputs: Sequence[str | Path], out_dir: str | Path, *,
                  heatmaps: bool = False, fmt: TableFormat = "csv", batch_size: int = 32,
                  progress: Progress | None = None) -> PredictSummary:
    """Run the stages in this process, one batch at a time."""
    out, heat_dir = _prepare_out(out_dir, heatmaps)
    size, base = input_size(predictor), os.getcwd()
    writer = TableWriter(out, fmt)
    done = 0
    try:
        for decoded in _decoded_blocks(inputs, batch_size, size, base):
            batch = score_batch(predictor, decoded, maps=heatmaps)
            if heat_dir is not None:
                batch = write_heatmaps(batch, heat_dir=str(heat_dir), base=base)
            done += writer.write(batch)
            if progress is not None:
                progress(done)
    except BaseException:
        writer.abort()
        raise
    return PredictSummary(writer.close(), writer.scored, writer.failed, heat_dir)


def predict_images(source: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *,
                   engine: str = "local", address: str | None = None, device: str = "auto",
                   heatmaps: bool = False, fmt: TableFormat = "csv", batch_size: int = 32,
                   workers: int | None = None, progress: Progress | None = None) -> PredictSummary:
    """Score every image of ``inputs`` (image files, folders, text files of paths) with the model at
    ``source`` (a run folder, its ``model/`` folder, an exported ``.safetensors`` or ``.onnx`` file).

    ``engine="local"`` runs here; ``engine="ray"`` streams the listing through Ray Data on the cluster at
    ``address`` (default: a local one) with ``workers`` predictor actors, each loading the model once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if engine == "local" and (address is not None or workers is not None):
        raise ValueError("--address and --workers apply to --engine ray")
    if engine == "ray":
        require_ray()  # before the model load and the cluster start
    predictor = load_predictor(source, device=device)  # fails here, before any work, for a bad model
    if engine == "local":
        return predict_local(predictor, inputs, out_dir, heatmaps=heatmaps, fmt=fmt, batch_size=batch_size,
                             progress=progress)
    size = input_size(predictor)
    del predictor  # each actor loads its own copy
    with make_engine(engine, address=address):  # joins --address, or starts a local cluster and stops it after
        from .ray_predict import predict_ray

        return predict_ray(source, size, inputs, out_dir, device=device, heatmaps=heatmaps, fmt=fmt,
                           batch_size=batch_size, workers=workers, progress=progress)

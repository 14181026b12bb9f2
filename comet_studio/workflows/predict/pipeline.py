"""The one prediction pipeline: load a predictor, read images, score them in batches, write one row per image.

Every caller goes through it: the app's Test tab (``iter_predictions``: batches of images in memory),
``comet-studio predict`` (``predict_local``) and Ray (``ray_predict.py`` runs the same stages in tasks and
actors). What to predict comes from ``listing.py``.

Each stage is a function of a column batch (a dict of numpy arrays: ``index``, ``path``, ``error``, then
``image``, then ``score``/``raw_score``/``label``/``map``, then ``heatmap``), so Ray Data can run it
anywhere. They end in one table::

    predictions.csv | predictions.parquet   path, score, raw_score, label, heatmap, error (listing order)
    heatmaps/<index:06d>_<stem>.png          overlays at the original resolution (with ``heatmaps=True``)

A file that cannot be read gets a row with its ``error``; it never stops the run.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from ...core.data.images import ImageReadError, read_image
from ...core.data.transforms import load_resized
from ...core.model import AnomalyModel, Prediction
from ...core.progress import CountProgress
from ...viz.overlays import overlay_heatmap
from .listing import iter_blocks, iter_listing, to_columns

__all__ = ["Predictor", "load_predictor", "input_size", "iter_predictions", "TableFormat", "TABLE_COLUMNS",
           "PredictSummary", "decode_batch", "score_batch", "heatmap_name", "write_heatmaps", "TableWriter",
           "prepare_out", "write_rows", "predict_local"]

TableFormat = Literal["csv", "parquet"]
TABLE_COLUMNS = ("path", "score", "raw_score", "label", "heatmap", "error")


class Predictor(Protocol):
    """Anything that scores RGB images: ``AnomalyModel`` or ``OnnxPredictor``."""

    def predict(self, images: Sequence[np.ndarray]) -> Prediction: ...


def load_predictor(source: str | Path, *, device: str = "auto") -> Predictor:
    """An exported ``.onnx`` file -> ``OnnxPredictor``; a run folder, its ``model/`` folder or an exported
    ``.safetensors`` file -> ``AnomalyModel``."""
    if Path(source).suffix.lower() == ".onnx":
        from ...core.io.onnx_predictor import OnnxPredictor  # onnxruntime is only imported when needed

        return OnnxPredictor(source, device=device)
    return AnomalyModel.load(source, device=device)


def input_size(predictor: Predictor) -> int:
    """The square input size a predictor resizes images to (``AnomalyModel`` or ``OnnxPredictor``)."""
    size = getattr(predictor, "image_size", None)
    return int(size) if size is not None else int(predictor.config.backbone.image_size)  # type: ignore[attr-defined]


def _read_each(paths: Iterable[str], errors: Sequence[str], read: Callable[[str], np.ndarray]
               ) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """(position, image, error) per path: ``read(path)`` where no ``error`` is known yet, else None; a file
    that cannot be read gets the reader's message as its error (never raised)."""
    for i, (path, error) in enumerate(zip(paths, errors)):
        if error:
            yield i, None, error
            continue
        try:
            yield i, read(path), ""
        except ImageReadError as exc:
            yield i, None, str(exc)


def iter_predictions(model: Predictor, paths: Sequence[str], *, chunk: int = 64
                     ) -> Iterator[tuple[list[str], Prediction | None, list[tuple[str, str]], list]]:
    """(paths, prediction, unreadable, images) per chunk of ``paths``, the images at their own resolution
    (the app shows them). Unreadable files are reported, not raised."""
    for block in iter_blocks(iter(paths), chunk):
        good, bad, images = [], [], []
        for i, image, error in _read_each(block, [""] * len(block), read_image):
            if error:
                bad.append((block[i], error))
            else:
                good.append(block[i])
                images.append(image)
        if good:
            yield good, model.predict(images), bad, images
        elif bad:
            yield [], None, bad, []


@dataclass(frozen=True)
class PredictSummary:
    table: Path
    scored: int
    failed: int  # rows with an error (unreadable or not an image)
    heatmaps: Path | None


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

    def read(path: str) -> np.ndarray:
        return load_resized(_resolve(path, base), size)

    for i, image, error in _read_each(batch["path"], errors, read):
        if image is not None:
            images[i] = image
        errors[i] = error
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
        score[ok], raw[ok] = prediction.image_score, prediction.raw_score
        label[ok] = np.where(prediction.pred_label, "anomalous", "good")
        if heat is not None:
            heat[ok] = prediction.anomaly_map
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
    for i, image, error in _read_each(batch["path"], errors, lambda path: read_image(_resolve(path, base))):
        if image is None:
            if not errors[i]:  # read when it was scored, not now: changed on disk since
                errors[i] = f"heatmap: {error}"
            continue
        index, path = int(batch["index"][i]), batch["path"][i]
        name = heatmap_name(index, path)
        overlay = overlay_heatmap(image, batch["map"][i])
        cv2.imwrite(os.path.join(heat_dir, name), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        names[i] = f"{Path(heat_dir).name}/{name}"
    return {**{k: v for k, v in batch.items() if k != "map"}, "error": errors, "heatmap": names}


class TableWriter:
    """Rows appended batch by batch to ``predictions.csv`` or ``.parquet``; the file appears (atomically)
    on ``close``, so an interrupted run never leaves a table that looks complete. As a context manager it
    closes on success and drops the partial table on any error (or Ctrl-C)."""

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

    def _close_file(self) -> None:
        if self.format == "parquet":
            self._parquet.close()
        else:
            self._handle.close()

    def close(self) -> Path:
        self._close_file()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial table (an error or Ctrl-C)."""
        self._close_file()
        self._tmp.unlink(missing_ok=True)

    def summary(self, heatmaps: Path | None) -> PredictSummary:
        return PredictSummary(self.path, self.scored, self.failed, heatmaps)

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def prepare_out(out_dir: str | Path, heatmaps: bool) -> tuple[Path, Path | None]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heat_dir = out / "heatmaps" if heatmaps else None
    if heat_dir is not None:
        heat_dir.mkdir(exist_ok=True)
    return out, heat_dir


def write_rows(writer: TableWriter, batches: Iterable[dict[str, np.ndarray]],
               progress: CountProgress | None = None) -> None:
    """Append every finished batch to the table, in order, reporting the rows written so far."""
    done = 0
    for batch in batches:
        done += writer.write(batch)
        if progress is not None:
            progress(done)


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
                  progress: CountProgress | None = None) -> PredictSummary:
    """Run the stages in this process, one batch at a time."""
    out, heat_dir = prepare_out(out_dir, heatmaps)
    size, base = input_size(predictor), os.getcwd()

    def finished(decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = score_batch(predictor, decoded, maps=heatmaps)
        return batch if heat_dir is None else write_heatmaps(batch, heat_dir=str(heat_dir), base=base)

    with TableWriter(out, fmt) as writer:
        write_rows(writer, map(finished, _decoded_blocks(inputs, batch_size, size, base)), progress)
    return writer.summary(heat_dir)

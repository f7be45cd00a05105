"""A batch job: a registered version predicts an input file chunk by chunk.

For each chunk of at most ``chunk_rows`` rows (memory holds one chunk): the rows are encoded as the
servers encode a request (``kfloop.batch.encode``), predicted with the predictor's own function
(``kfloop.training.booster.predict``), written to the predictions file with the input's id column (or
the row number) and the row's capture id, the rows that cannot be predicted go to the rejects file with
their reason, the predicted rows become capture records (revision ``batch``; row ``i`` is
``<batch id>:<i>``, so feedback labels join them as they join served rows) and a seeded sample of the
chunk's rows (``drift_rows``) is checked against the version's drift baseline. One progress line per
chunk. Reading, writing and capture run on threads of their own beside the prediction
(``kfloop.batch.overlap``: the drift check, predictions and rejects on one, the capture objects on
another, each handed every predicted chunk, side by side). Everything is committed at the end: the
capture objects, then the rejects and predictions files; a failure leaves neither file and no capture.

The model reference is resolved first, then the input's columns are checked against the schema: an
unknown version or stage, or an input that lacks feature columns, fails before any row is predicted.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from kfloop import timestamps
from kfloop.batch.encode import ChunkEncoder, EncodedChunk, check_columns
from kfloop.batch.outputs import Spool, TableFile, sibling
from kfloop.batch.overlap import Drain, prefetch
from kfloop.batch.source import open_input
from kfloop.config import Settings
from kfloop.errors import ConfigError
from kfloop.monitoring.capture import capture_key
from kfloop.monitoring.capture_format import encode_parquet_table
from kfloop.monitoring.drift import load_detector
from kfloop.names import (
    BATCH_PREDICTION_COLUMN,
    BATCH_PROBABILITY_PREFIX,
    BATCH_REASON_COLUMN,
    BATCH_REQUEST_ID_COLUMN,
    BATCH_REVISION,
    BATCH_ROW_COLUMN,
    captures_prefix,
)
from kfloop.schema import FeatureSchema
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry, VersionRecord
from kfloop.training.booster import load_model, predict

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
DEFAULT_DRIFT_ROWS = 5_000
REJECTS_SUFFIX = ".rejects.csv"
READ_AHEAD = 1  # chunks read ahead of the one being predicted
WRITE_AHEAD = 1  # predicted chunks waiting for the writer besides the one being written
MAX_PREDICTORS = 4  # xgboost calls at once, each on cpus // predictors threads (a chunk is cut in as many slices)
MIN_SLICE_ROWS = 4096  # rows below which a chunk is predicted in one call
CAPTURE_AHEAD = 1  # predicted chunks waiting for the capture thread besides the one being encoded


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """What a batch job predicts and where it writes. ``rejects`` defaults to ``<output>.rejects.csv``."""

    model: str  # NAME, NAME:VERSION or NAME@STAGE
    input: str
    output: str
    rejects: str = ""
    id_column: str = ""
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    capture: bool = True
    drift: bool = True
    drift_rows: int = DEFAULT_DRIFT_ROWS
    seed: int = 0

    @property
    def rejects_location(self) -> str:
        return self.rejects or sibling(self.output, REJECTS_SUFFIX)

    def check(self) -> None:
        if self.chunk_rows < 1:
            raise ConfigError(f"chunk_rows={self.chunk_rows}: expected at least 1 row per chunk")
        if self.drift_rows < 1:
            raise ConfigError(f"drift_rows={self.drift_rows}: expected at least 1 row checked per chunk")
        if not self.input.strip() or not self.output.strip():
            raise ConfigError("a batch job needs an input and an output location")
        places = {"input": self.input.strip(), "output": self.output.strip(), "rejects": self.rejects_location}
        if len(set(places.values())) < len(places):
            raise ConfigError(f"input, output and rejects must be three different locations; got {places}")


def resolve_model(settings: Settings, ref: str) -> VersionRecord:
    """The registered version ``ref`` names; ModelNotFound / RegistryError when there is none."""
    return Registry(open_store(settings)).resolve(ref)


def check_input(options: BatchOptions, settings: Settings, schema: FeatureSchema) -> None:
    """Refuse an input that lacks feature columns (or the id column), reading its header only."""
    with open_input(options.input, settings, options.chunk_rows) as source:
        check_columns(source.columns(), schema, source.uri, options.id_column)


def run_batch(options: BatchOptions, settings: Settings, progress: Callable[[str], None] = print) -> dict:
    """Run the job; returns its summary (counts, drift per chunk, locations)."""
    options.check()
    started = time.monotonic()
    store = open_store(settings)
    with tempfile.TemporaryDirectory(prefix="kfloop-batch-") as tmp:
        record, model_dir = Registry(store).fetch_bundle(options.model, Path(tmp) / "bundle")
        schema = bundle.load_schema(model_dir)
        booster = load_model(model_dir / bundle.MODEL_FILE)
        detector = None
        if options.drift and (model_dir / bundle.DRIFT_DIR).is_dir():
            detector = load_detector(model_dir / bundle.DRIFT_DIR)
        with open_input(options.input, settings, options.chunk_rows) as source:
            check_columns(source.columns(), schema, source.uri, options.id_column)
            source.dictionary_columns = {f.name for f in schema.features if f.kind == "categorical"}
            source.numeric_columns = {f.name for f in schema.features if f.kind == "numeric"}
            job = _Job(options, settings, record, schema, booster, detector, store, Path(tmp), progress)
            summary = job.run(source)
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["rows_per_s"] = round(summary["rows"] / summary["seconds"], 1) if summary["seconds"] else None
    return summary


@dataclasses.dataclass
class _Predicted:
    """A chunk on its way from prediction to the writer."""

    index: int
    offset: int  # the input row number of the chunk's first row
    num_rows: int
    table: pa.Table  # the columns the writer needs
    encoded: EncodedChunk
    pred: np.ndarray
    drift_sample: np.ndarray | None  # the encoded rows the drift check takes (checked by the writer)
    rows: np.ndarray  # the input row numbers of the accepted rows
    request_ids: pa.Array  # their capture ids, ``<batch id>:<row>``
    drift: dict | None = None


@contextlib.contextmanager
def _job_memory_pool():
    """Arrow allocates from jemalloc while the job runs, and the writer and capture threads give each chunk's
    memory back (``release_unused``: jemalloc purges its arenas): with Arrow's default mimalloc pool, freed
    chunks stay with the process and its memory grows with the number of chunks (1M rows took ~60 MB more
    than 100k); with the C allocator (malloc_trim) memory stays bounded too, but every chunk's buffers are new
    pages the kernel faults in and zeroes (~0.15-0.2 s more CPU per 1M Parquet rows; peak 449 MB at 3M rows
    against jemalloc's 469, both flat from 1M). Where this pyarrow has no jemalloc, the C allocator. Buffers
    remember their pool, so ones allocated before or after the job are freed where they came from."""
    previous = pa.default_memory_pool()
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


class _Job:
    def __init__(self, options, settings, record, schema, booster, detector, store, workdir, progress):
        self.options, self.record, self.schema = options, record, schema
        self.booster, self.detector, self.store, self.progress = booster, detector, store, progress
        self.encoder = ChunkEncoder(schema)
        # Slices of rows are predicted side by side (each chunk in ``predictors`` slices, as many chunks in flight),
        # each call with few xgboost threads (one on 2 CPUs), not one call at a time with all: the threads of
        # one call wait for each other, and spin, whenever the writer, capture or reader thread takes one of
        # their CPUs (1M rows, 2 CPUs: 0.92 s where one 2-thread call took 1.18 s; the same predictions). A
        # booster predicts concurrently (xgboost's inplace_predict is thread-safe).
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.predictors = max(1, min(MAX_PREDICTORS, cpus))
        booster.set_param({"nthread": max(1, cpus // self.predictors)})
        self.batch_id = uuid.uuid4().hex
        self.predictions = TableFile(options.output, settings, workdir, dictionary_columns=[BATCH_PREDICTION_COLUMN])
        self.rejects = TableFile(options.rejects_location, settings, workdir)
        self.spool = Spool(store) if options.capture else None
        self.capturer: Drain | None = None  # the capture thread, while the job runs
        self.rng = np.random.default_rng(options.seed)
        self.counts = {"rows": 0, "predicted": 0, "rejected": 0, "captured": 0}
        self.unseen: dict[str, int] = {}
        self.drift: list[dict] = []
        self._last_progress = time.monotonic()

    def run(self, source) -> dict:
        chunk_index = -1
        with _job_memory_pool():
            writer: Drain[_Predicted] = Drain(self._write, depth=WRITE_AHEAD, name="batch-write")
            if self.spool is not None:  # capture objects are encoded on a thread of their own, beside the writer
                self.capturer = Drain(self._capture_chunk, depth=CAPTURE_AHEAD, name="batch-capture")
            try:
                chunks = prefetch(source.chunks(), depth=READ_AHEAD, name="batch-read")
                pool = ThreadPoolExecutor(self.predictors, thread_name_prefix="batch-predict")
                try:
                    in_flight: collections.deque[tuple] = collections.deque()
                    for chunk_index, table in enumerate(chunks):
                        in_flight.append(self._submit(pool, chunk_index, table))
                        del table
                        if len(in_flight) >= self.predictors:
                            self._hand_over(self._predicted(*in_flight.popleft()), writer)
                    while in_flight:
                        self._hand_over(self._predicted(*in_flight.popleft()), writer)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
                    chunks.close()
                writer.close()
                if self.capturer is not None:
                    self.capturer.close()
                self.predictions.close(self._prediction_schema())
                self.rejects.close(self._rejects_schema(source.columns()))
                if self.spool is not None:
                    self.spool.commit()
                self.rejects.commit()
                self.predictions.commit()
            except BaseException:
                writer.abort()
                if self.capturer is not None:
                    self.capturer.abort()
                self.predictions.abort()
                self.rejects.abort()
                if self.spool is not None:
                    self.spool.close()
                raise
        return {
            "model": self.record.ref,
            "batch_id": self.batch_id,
            "input": source.uri,
            "output": self.predictions.uri,
            "rejects_output": self.rejects.uri,
            "chunks": chunk_index + 1,
            **self.counts,
            "unseen": self.unseen,
            "capture_location": self.store.uri(captures_prefix(self.record.name, str(self.record.version)))
            if self.spool is not None
            else None,
            "drift": {
                "chunks_checked": len(self.drift),
                "chunks_drifted": sum(d["is_drift"] for d in self.drift),
                "per_chunk": self.drift,
            },
        }

    def _submit(self, pool: ThreadPoolExecutor, index: int, table: pa.Table) -> tuple:
        """On the job's thread, in order: encode a chunk and start its prediction on the pool."""
        offset = self.counts["rows"]
        encoded = self.encoder.encode(table)
        for name, count in encoded.unseen.items():
            self.unseen[name] = self.unseen.get(name, 0) + count
        self.counts["rows"] += table.num_rows
        self.counts["predicted"] += len(encoded.accepted)
        self.counts["rejected"] += len(encoded.rejected)
        slices = _row_slices(len(encoded.X), self.predictors)
        futures = [pool.submit(predict, self.booster, self.schema, encoded.X[rows]) for rows in slices]
        return index, offset, table, encoded, futures

    def _predicted(
        self, index: int, offset: int, table: pa.Table, encoded: EncodedChunk, futures: list[Future]
    ) -> _Predicted:
        """On the job's thread, in order: a chunk's predictions, its drift sample drawn, for the writer."""
        parts = [future.result() for future in futures]
        pred, num_rows = (parts[0] if len(parts) == 1 else np.concatenate(parts)), table.num_rows
        sample = self._drift_sample(encoded.X)
        encoded.X = None  # not needed by the writer: free it now
        if not encoded.rejected:  # the writer needs the id column and the features as captured, no more
            columns = {n: table.column(n) for n in self.schema.names if n not in encoded.received}
            if self.options.id_column:  # one piece of its own, not a view of the chunk's CSV blocks
                columns[self.options.id_column] = table.column(self.options.id_column).combine_chunks()
            table = pa.table(columns)
        rows = offset + encoded.accepted
        request_ids = pc.binary_join_element_wise(
            pa.scalar(f"{self.batch_id}:"), pc.cast(pa.array(rows), pa.string()), ""
        )
        return _Predicted(index, offset, num_rows, table, encoded, pred, sample, rows, request_ids)

    def _hand_over(self, chunk: _Predicted, writer: Drain) -> None:
        """On the job's thread: a predicted chunk to the writer and, side by side, to the capture thread (so the
        last chunk's capture object is encoded while its predictions are written, not after)."""
        if self.capturer is not None and len(chunk.rows):
            self.capturer.put((chunk.table, chunk.encoded, chunk.request_ids, chunk.pred))
        writer.put(chunk)

    def _write(self, chunk: _Predicted) -> None:
        """On the writer thread: the chunk's drift check (off the prediction's thread), predictions and rejects,
        then its progress line."""
        if chunk.drift_sample is not None:
            chunk.drift, chunk.drift_sample = self._check_drift(chunk.index, chunk.drift_sample), None
        table, encoded, pred, offset = chunk.table, chunk.encoded, chunk.pred, chunk.offset
        rows, request_ids = chunk.rows, chunk.request_ids
        self.predictions.write(self._prediction_table(table, encoded, rows, request_ids, pred))
        if encoded.rejected:
            self.rejects.write(self._rejects_table(table, encoded, offset))
        line = (
            f"chunk {chunk.index}: rows {offset}-{offset + chunk.num_rows - 1}: {len(rows)} predicted, "
            f"{len(encoded.rejected)} rejected"
            + (f", unseen categories {encoded.unseen}" if encoded.unseen else "")
            + (_drift_text(chunk.drift) if chunk.drift else "")
        )
        n = chunk.num_rows
        del rows, request_ids, table, encoded, pred, chunk
        pa.default_memory_pool().release_unused()  # give the chunk's memory back (see _job_memory_pool)
        now = time.monotonic()
        took, self._last_progress = now - self._last_progress, now
        self.progress(f"{line} ({n / took if took else 0:,.0f} rows/s)")

    # -- the tables ------------------------------------------------------------------------------

    def _id_column(self, table: pa.Table, encoded: EncodedChunk, rows: np.ndarray) -> tuple[str, pa.Array]:
        if not self.options.id_column:
            return BATCH_ROW_COLUMN, pa.array(rows, pa.int64())
        return self.options.id_column, _accepted(table.column(self.options.id_column), encoded)

    def _prediction_table(self, table, encoded, rows, request_ids, pred) -> pa.Table:
        id_name, ids = self._id_column(table, encoded, rows)
        columns = {id_name: ids, BATCH_REQUEST_ID_COLUMN: request_ids}
        if self.schema.task == "regression":
            columns[BATCH_PREDICTION_COLUMN] = pa.array(np.asarray(pred, dtype=np.float32))
        else:
            labels = pa.array([str(c) for c in self.schema.classes], pa.string())
            columns[BATCH_PREDICTION_COLUMN] = labels.take(pa.array(np.argmax(pred, axis=1)))
            for k, label in enumerate(self.schema.classes):
                columns[f"{BATCH_PROBABILITY_PREFIX}{label}"] = pa.array(np.asarray(pred[:, k], dtype=np.float32))
        arrays = list(columns.values())
        schema = self._written_schema(pa.schema([pa.field(n, a.type) for n, a in zip(columns, arrays)]))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _written_schema(self, schema: pa.Schema) -> pa.Schema:
        """``schema`` with the columns batch makes declared non-nullable (they never hold a null; Parquet
        then writes no definition levels for them); the input's id column may hold nulls."""
        return pa.schema([pa.field(f.name, f.type, nullable=f.name == self.options.id_column) for f in schema])

    def _prediction_schema(self) -> pa.Schema:
        id_field = (
            pa.field(BATCH_ROW_COLUMN, pa.int64())
            if not self.options.id_column
            else pa.field(self.options.id_column, pa.string())
        )
        fields = [id_field, pa.field(BATCH_REQUEST_ID_COLUMN, pa.string())]
        if self.schema.task == "regression":
            fields.append(pa.field(BATCH_PREDICTION_COLUMN, pa.float32()))
        else:
            fields.append(pa.field(BATCH_PREDICTION_COLUMN, pa.string()))
            fields += [pa.field(f"{BATCH_PROBABILITY_PREFIX}{c}", pa.float32()) for c in self.schema.classes]
        return self._written_schema(pa.schema(fields))

    def _rejects_table(self, table: pa.Table, encoded: EncodedChunk, offset: int) -> pa.Table:
        positions = np.fromiter(sorted(encoded.rejected), dtype=np.int64)
        taken = table.take(pa.array(positions))
        columns = {BATCH_ROW_COLUMN: pa.array(offset + positions, pa.int64())}
        columns[BATCH_REASON_COLUMN] = pa.array([encoded.rejected[i] for i in positions.tolist()], pa.string())
        for name in taken.column_names:
            if name not in columns:
                columns[name] = _as_text(taken.column(name))
        return pa.table(columns)

    def _rejects_schema(self, input_columns: list[str]) -> pa.Schema:
        fixed = [BATCH_ROW_COLUMN, BATCH_REASON_COLUMN]
        return pa.schema(
            [pa.field(BATCH_ROW_COLUMN, pa.int64()), pa.field(BATCH_REASON_COLUMN, pa.string())]
            + [pa.field(n, pa.string()) for n in input_columns if n not in fixed]
        )

    def _capture_chunk(self, item: tuple) -> None:
        """On the capture thread: a predicted chunk's capture object, then its memory given back."""
        self._capture(*item)
        del item
        pa.default_memory_pool().release_unused()

    def _capture(self, table: pa.Table, encoded: EncodedChunk, request_ids: pa.Array, pred: np.ndarray) -> None:
        n = len(encoded.accepted)
        features = pa.StructArray.from_arrays(
            [_received(table, encoded, f.name, f.kind) for f in self.schema.features],
            names=self.schema.names,
        )
        if self.schema.task == "regression":
            prediction = pa.array(np.asarray(pred, dtype=np.float32))
        else:
            flat = pa.array(np.ascontiguousarray(pred, dtype=np.float32).ravel())
            prediction = pa.FixedSizeListArray.from_arrays(flat, len(self.schema.classes))
        zeros = pa.array(np.zeros(n, dtype=np.int32))  # the indices of every constant column (one copy)
        unseen = _constant("{}", zeros)
        if encoded.unseen_rows:
            texts = np.full(n, "{}", dtype=object)
            where = np.searchsorted(encoded.accepted, list(encoded.unseen_rows))
            for i, values in zip(where.tolist(), encoded.unseen_rows.values()):
                texts[i] = orjson.dumps(values, default=str).decode()
            unseen = pa.array(texts, pa.string())
        now = timestamps.rfc3339()
        captured = pa.table(
            {
                "request_id": request_ids,
                "time": _constant(now, zeros),
                "model": _constant(self.record.name, zeros),
                "model_version": _constant(str(self.record.version), zeros),
                "revision": _constant(BATCH_REVISION, zeros),
                "features": features,
                "prediction": prediction,
                "unseen": unseen,
            }
        )
        data = encode_parquet_table(captured, json_columns=["unseen"])
        self.spool.add(capture_key(self.record.name, str(self.record.version), now[:10], data, "parquet"), data)
        self.counts["captured"] += n

    def _drift_sample(self, X: np.ndarray) -> np.ndarray | None:
        """The seeded sample of a chunk's encoded rows that the drift check takes (None: no check)."""
        if self.detector is None or len(X) == 0:
            return None
        if len(X) > self.options.drift_rows:
            return X[np.sort(self.rng.choice(len(X), self.options.drift_rows, replace=False))]
        return X

    def _check_drift(self, index: int, sample: np.ndarray) -> dict:
        data = self.detector.predict(sample)["data"]
        result = {
            "chunk": index,
            "rows_checked": len(sample),
            "is_drift": bool(data["is_drift"]),
            "threshold": data["threshold"],
            "p_val_by_feature": dict(zip(self.schema.names, data["p_val"])),
        }
        self.drift.append(result)
        return result


def _row_slices(n: int, parts: int) -> list[slice]:
    """``n`` rows cut into ``parts`` slices of consecutive rows (one when there are few rows): a chunk is predicted
    by every predictor, so a lone chunk (a small input, the last chunk) uses every CPU too. Rows are predicted
    independently: the slices' predictions, concatenated, are the chunk's."""
    parts = max(1, min(parts, n // MIN_SLICE_ROWS))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def _drift_text(drift: dict) -> str:
    p_values = {k: v for k, v in drift["p_val_by_feature"].items() if v is not None}
    worst = min(p_values, key=p_values.get) if p_values else None
    if drift["is_drift"]:
        return f", DRIFT in {drift['rows_checked']} checked rows ({worst} p={p_values[worst]:.2g})"
    return f", no drift in {drift['rows_checked']} checked rows" + (
        f" (lowest p {p_values[worst]:.2g}, {worst})" if worst else ""
    )


def _accepted(column: pa.Array | pa.ChunkedArray, encoded: EncodedChunk) -> pa.Array:
    """The accepted rows of a chunk's column, as one array (no copy when all rows were accepted and the
    column is one piece, as a Parquet chunk's columns are)."""
    if encoded.rejected:
        column = column.take(pa.array(encoded.accepted))
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _received(table: pa.Table, encoded: EncodedChunk, name: str, kind: str) -> pa.Array:
    """A feature's values in the accepted rows as captured: numbers for a numeric feature read as text
    (CSV; converted once, by the encoder, when the whole chunk's text converts), categories
    dictionary-encoded (by the encoder), else as read."""
    if name in encoded.received:
        return _accepted(encoded.received[name], encoded)
    column = _accepted(table.column(name), encoded)
    if kind == "numeric" and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        try:  # the rows the encoder rejected held the text that did not convert
            return pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return column


def _constant(value: str, zeros: pa.Array) -> pa.Array:
    """One string in every row (``zeros``: an int32 array of zeros, a row each), dictionary-encoded (one copy)."""
    return pa.DictionaryArray.from_arrays(zeros, pa.array([value]))


def _as_text(column: pa.ChunkedArray) -> pa.Array:
    try:
        return pc.cast(column, pa.string()).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())

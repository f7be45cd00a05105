"""How capture records are stored: object keys, JSON Lines and Parquet codecs, checksums.

Keys are ``captures/<model>/<version>/<YYYY-MM-DD>/<time>-<uid>-<sha256>.<format>`` where
``<sha256>`` is the hex SHA-256 of the object's bytes (checked by ``decode``).

- ``jsonl``: one record per line, serialized with orjson (numpy scalars and arrays become
  JSON numbers and lists, NaN becomes null, unknown types their ``str``).
- ``parquet``, one row per record, in one of two layouts that ``decode`` reads alike:

  - columnar (served requests, ``encode_batches``, and batch inference, ``encode_parquet_table``):
    the text fields (request_id, capture_id, time, model, model_version, revision) are string
    columns (the per-request ones dictionary-encoded); ``features`` is a struct column with one
    typed field per feature, the values as received (int64, double, string, or null when a
    feature holds only nulls; a feature whose values mix types, such as ``41`` and ``"41"``, is a
    field of JSON text, listed in the file metadata ``kfloop.json_features``); ``prediction`` is
    typed (double, int64, string, or a list of doubles per row); ``unseen``, and any column Arrow
    cannot type, is JSON text, listed in ``kfloop.json_columns``. Numbers keep their value but may
    read back as floats (``41`` beside ``40.5`` is ``41.0``, equal in Python; V1 lists of numbers are
    stored as doubles, from the decoder's float64 rows); NaN reads back as
    null, as in JSON Lines. Batch inference's objects have no capture_id (its rows' capture id is
    their request id).
  - per record (``encode`` of record dicts, as every object before the columnar layout): the text
    fields are string columns and every other field (features, prediction, unseen...) is a column
    of JSON text, so values of any type round-trip; ``kfloop.json_columns`` lists those columns.

  A field a record lacks reads back as absent (a text field stored as None also reads back as absent).
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import orjson

from kfloop.errors import ChecksumError
from kfloop.monitoring.capture_batch import (
    CaptureBatch,
    capture_ids_of,
    columns_of,
    predictions_of,
    records_of,
    request_ids_of,
    stamp_times,
    unseen_of,
)
from kfloop.names import CAPTURES_PREFIX as PREFIX
from kfloop.store.objects import sha256_bytes

FORMATS = {"jsonl", "parquet"}
TEXT_FIELDS = ("request_id", "time", "model", "model_version", "revision")
BATCH_TEXT_FIELDS = ("request_id", "capture_id", *TEXT_FIELDS[1:])
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_NAME = re.compile(r"^.+-(?P<digest>[0-9a-f]{64})\.(?P<format>jsonl|parquet)$")


class CaptureKey(NamedTuple):
    """The parts of a capture object's key."""

    model: str
    version: str
    day: str
    digest: str
    format: str


def parse_key(key: str) -> CaptureKey | None:
    """The parts of a capture key, or None for a key that is not a capture object."""
    parts = key.split("/")
    match = _NAME.match(parts[-1])
    if len(parts) != 5 or parts[0] != PREFIX or match is None:
        return None
    return CaptureKey(parts[1], parts[2], parts[3], match["digest"], match["format"])


def encode(records: list[dict], format: str) -> bytes:
    if format == "jsonl":
        line = JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
        return b"".join([orjson.dumps(r, option=line, default=str) for r in records])
    return _encode_parquet(records)


def encode_batches(batches: Sequence[CaptureBatch], format: str) -> bytes:
    """One capture object holding the rows of ``batches`` (served requests): JSON Lines of their records,
    or a columnar Parquet table (the layout in the module docstring), built column by column."""
    stamp_times(batches)
    if len({b.names for b in batches}) > 1:  # requests of schemas with other features: one record at a time
        return encode([r for b in batches for r in b.records()], format)
    if format == "jsonl":
        return encode(records_of(batches), format)
    return encode_parquet_table(*_batch_table(batches))


def _batch_table(batches: Sequence[CaptureBatch]):
    """The Arrow table of ``batches``' rows, and the names of its JSON text columns and feature fields."""
    import pyarrow as pa

    names = batches[0].names
    fields = _v1_fields(batches)
    json_features: list[str] = []
    if fields is None:  # per column: V2 tensors, mixed layouts, or values Arrow does not type alike
        columns = columns_of(batches)
        fields = []
        for name in names:
            array, as_json = _typed(columns[name])
            fields.append(array)
            if as_json:
                json_features.append(name)
    prediction, prediction_json = _typed(predictions_of(batches))
    unseen = ["{}"] * len(prediction)
    for i, values in unseen_of(batches).items():
        unseen[i] = orjson.dumps(values, option=JSON_OPTIONS, default=str).decode()
    counts = np.fromiter((b.n_rows for b in batches), dtype=np.int64, count=len(batches))
    per_request = pa.array(np.repeat(np.arange(len(batches), dtype=np.int32), counts))

    def constant(values: list[str]):
        return pa.DictionaryArray.from_arrays(per_request, pa.array(values, pa.string()))

    table = pa.table(
        {
            "request_id": pa.array(request_ids_of(batches), pa.string()),
            "capture_id": pa.array(capture_ids_of(batches), pa.string()),
            "time": constant([b.stamp for b in batches]),
            "model": constant([b.model for b in batches]),
            "model_version": constant([b.model_version for b in batches]),
            "revision": constant([b.revision for b in batches]),
            "features": pa.StructArray.from_arrays(fields, names=list(names)),
            "prediction": prediction,
            "unseen": pa.array(unseen, pa.string()),
        }
    )
    return table, ["unseen", *(["prediction"] if prediction_json else [])], json_features


def _v1_fields(batches: Sequence[CaptureBatch]) -> list | None:
    """The feature fields of V1 batches that are all lists in schema order or all objects: from the
    decoder's float64 rows when every batch has them (no conversion at all), else typed by one Arrow
    conversion of all the rows (no Python step per value: ~2x faster than a transpose and a conversion per
    column). None for other layouts, or when Arrow does not give the rows one type (a value of another type
    in some field, such as ``41`` beside ``"41"``: then ``_typed`` per column). The values of lists share
    one type (the decoder's rows are doubles): whole numbers beside fractions read back as floats."""
    import pyarrow as pa
    import pyarrow.compute as pc

    layouts = {b.layout for b in batches}
    if len(layouts) != 1 or (layout := layouts.pop()) not in ("rows", "objects"):
        return None
    names = batches[0].names
    if layout == "rows" and all(b.exact is not None for b in batches):  # the decoder's float64 rows
        matrix = np.concatenate([b.exact[b.start : b.stop] for b in batches])
        return [pa.array(matrix[:, j], from_pandas=True) for j in range(len(names))]  # (NaN: null)
    rows = list(itertools.chain.from_iterable(b.features[b.start : b.stop] for b in batches))
    try:
        nested = pa.array(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError):
        return None
    if nested.null_count:
        return None
    if layout == "objects":
        if not pa.types.is_struct(nested.type) or sorted(f.name for f in nested.type) != sorted(names):
            return None
        fields = [nested.field(name) for name in names]
    else:
        width = len(names)
        if not pa.types.is_list(nested.type) or pc.min_max(pc.list_value_length(nested)).as_py() != {
            "min": width,
            "max": width,
        }:
            return None
        values = nested.flatten()
        if values.null_count == 0 and (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            matrix = values.to_numpy().reshape(len(rows), width)  # no copy; a column is one strided copy
            fields = [pa.array(matrix[:, j]) for j in range(width)]
        else:
            at = np.arange(0, len(rows) * width, width)
            fields = [values.take(pa.array(at + j)) for j in range(width)]
    return [_nan_as_null(field) for field in fields]


def _nan_as_null(array):
    """A float array with its NaN as null (JSON Lines writes NaN as null too); any other array as it is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(array.type):
        nan = pc.is_nan(array)
        if pc.any(nan).as_py():
            return pc.if_else(nan, pa.scalar(None, array.type), array)
    return array


def _typed(values: list):
    """An Arrow array of ``values`` with the type Arrow infers (a float NaN as null), and False; or, for
    values of mixed types, their JSON text (None stays null), and True."""
    import pyarrow as pa

    try:
        array = pa.array(values)  # not from_pandas=True (NaN as null): ~20x slower on Python floats
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError):
        texts = [None if v is None else orjson.dumps(v, option=JSON_OPTIONS, default=str).decode() for v in values]
        return pa.array(texts, pa.string()), True
    return _nan_as_null(array), False


def decode(data: bytes, key: CaptureKey, where: str) -> list[dict]:
    """The records of one capture object, after checking its bytes against the key's digest."""
    actual = sha256_bytes(data)
    if actual != key.digest:
        raise ChecksumError(f"{where}: checksum mismatch (name says {key.digest}, content is {actual})")
    if key.format == "jsonl":
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return _decode_parquet(data)


def _encode_parquet(records: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for r in records for k in r))
    json_columns = [c for c in columns if c not in TEXT_FIELDS]
    arrays = {c: pa.array([_cell(r, c, c in json_columns) for r in records], pa.string()) for c in columns}
    table = pa.table(arrays).replace_schema_metadata({"kfloop.json_columns": json.dumps(json_columns)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def encode_parquet_table(table, json_columns: list[str], json_features: Sequence[str] = ()) -> bytes:
    """A Parquet capture object from an Arrow table of records (one row each): the text fields as
    strings, ``json_columns`` (and the fields ``json_features`` of the ``features`` struct) as JSON text,
    any other column as a typed Arrow column (struct, list, number) that ``decode`` reads back as the
    same Python values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = [c for c in TEXT_FIELDS if c not in table.column_names]
    if missing:
        raise ValueError(f"capture table lacks the text fields {missing}")
    metadata = {"kfloop.json_columns": json.dumps(list(json_columns))}
    if json_features:
        metadata["kfloop.json_features"] = json.dumps(list(json_features))
    table = _required(table).replace_schema_metadata(metadata)
    # Arrow's own growing buffer, not io.BytesIO: ~15% less CPU for a 100k-row table (pyarrow 21)
    sink = pa.BufferOutputStream()
    # no column statistics (nothing reads them) and dictionaries only for the dictionary columns and the
    # text inside structs (categories): trying dictionaries on unique ids and floats, and the statistics,
    # took ~4x the time of writing the pages (pyarrow 21)
    # integer fields of structs (counts, ages...) delta bit-packed: ~40% less time than plain + snappy for them,
    # and fewer bytes (DELTA_BINARY_PACKED, a Parquet 2.0 encoding every reader of Parquet decodes)
    pq.write_table(
        table,
        sink,
        write_statistics=False,
        use_dictionary=_dictionary_columns(table.schema),
        column_encoding=_delta_columns(table.schema) or None,
    )
    return sink.getvalue().to_pybytes()


def _required(table):
    """``table`` with the columns, and fields of struct columns, that hold no null declared non-nullable
    (no copy): Parquet then writes no definition levels for them, a third of the time of writing a
    capture table of batch inference (pyarrow 21)."""
    import pyarrow as pa

    arrays, fields = [], []
    for field, column in zip(table.schema, table.columns):
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        if pa.types.is_struct(field.type) and array.null_count == 0:
            children = array.flatten()
            subs = [
                pa.field(sub.name, sub.type, nullable=child.null_count > 0) for sub, child in zip(field.type, children)
            ]
            array = pa.StructArray.from_arrays(children, fields=subs)
        arrays.append(array)
        fields.append(pa.field(field.name, array.type, nullable=array.null_count > 0))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=table.schema.metadata))


def _dictionary_columns(schema) -> list[str]:
    """The column paths worth a Parquet dictionary: dictionary columns, and text fields of structs."""
    import pyarrow as pa

    paths = []
    for field in schema:
        if pa.types.is_dictionary(field.type):
            paths.append(field.name)
        elif pa.types.is_struct(field.type):
            paths += [
                f"{field.name}.{sub.name}"
                for sub in field.type
                if pa.types.is_string(sub.type)
                or pa.types.is_large_string(sub.type)
                or pa.types.is_dictionary(sub.type)
            ]
    return paths


def _delta_columns(schema) -> dict[str, str]:
    """The integer fields of structs, delta bit-packed (``encode_parquet_table``)."""
    import pyarrow as pa

    return {
        f"{field.name}.{sub.name}": "DELTA_BINARY_PACKED"
        for field in schema
        if pa.types.is_struct(field.type)
        for sub in field.type
        if pa.types.is_integer(sub.type)
    }


def _cell(record: dict, column: str, as_json: bool) -> str | None:
    if column not in record:
        return None
    value = record[column]
    if as_json:
        return orjson.dumps(value, option=JSON_OPTIONS, default=str).decode()
    return None if value is None else str(value)


def _decode_parquet(data: bytes) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Not pq.read_table: with pyarrow 21 reading from memory through the dataset API often
    # aborts the interpreter at exit ("terminate called without an active exception",
    # apache/arrow#34314); a single-threaded ParquetFile read does not.
    table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    metadata = table.schema.metadata or {}
    json_columns = set(json.loads(metadata.get(b"kfloop.json_columns", b"[]")))
    json_features = json.loads(metadata.get(b"kfloop.json_features", b"[]"))
    records = [
        {k: (orjson.loads(v) if k in json_columns else v) for k, v in row.items() if v is not None}
        for row in table.to_pylist()
    ]
    for record in records if json_features else ():
        features = record.get("features") or {}
        for name in json_features:
            if features.get(name) is not None:
                features[name] = orjson.loads(features[name])
    return records

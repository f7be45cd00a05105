"""How capture records are stored: object keys, JSON Lines and Parquet codecs, checksums.

Keys are ``captures/<model>/<version>/<YYYY-MM-DD>/<time>-<uid>-<sha256>.<format>`` where
``<sha256>`` is the hex SHA-256 of the object's bytes (checked by ``decode``).

- ``jsonl``: one record per line, serialized with orjson (numpy scalars and arrays become
  JSON numbers and lists, NaN becomes null, unknown types their ``str``).
- ``parquet``: one row per record. The text fields (request_id, time, model,
  model_version, revision) are string columns; every other field (features, prediction,
  unseen...) is a column of JSON text, so values of any type round-trip, and the file
  metadata ``kfloop.json_columns`` lists those columns. A field a record lacks reads back
  as absent (a text field stored as None also reads back as absent).
  Batch inference writes the same records column by column (``encode_parquet_table``): there
  ``features`` is a struct column (one field per feature, the values as read) and ``prediction``
  a float or fixed-size list column, which read back as the same dicts and lists; only the
  columns named in ``kfloop.json_columns`` are JSON text.
"""

from __future__ import annotations

import io
import json
import re
from typing import NamedTuple

import orjson

from kfloop.errors import ChecksumError
from kfloop.names import CAPTURES_PREFIX as PREFIX
from kfloop.store.objects import sha256_bytes

FORMATS = {"jsonl", "parquet"}
TEXT_FIELDS = ("request_id", "time", "model", "model_version", "revision")
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


def encode_parquet_table(table, json_columns: list[str]) -> bytes:
    """A Parquet capture object from an Arrow table of records (one row each): the text fields as
    strings, ``json_columns`` as JSON text, any other column as a typed Arrow column (struct, list,
    number) that ``decode`` reads back as the same Python values."""
    import pyarrow.parquet as pq

    missing = [c for c in TEXT_FIELDS if c not in table.column_names]
    if missing:
        raise ValueError(f"capture table lacks the text fields {missing}")
    table = table.replace_schema_metadata({"kfloop.json_columns": json.dumps(list(json_columns))})
    sink = io.BytesIO()
    # no column statistics (nothing reads them) and dictionaries only for the dictionary columns and the
    # text inside structs (categories): trying dictionaries on unique ids and floats, and the statistics,
    # took ~4x the time of writing the pages (pyarrow 21)
    pq.write_table(table, sink, write_statistics=False, use_dictionary=_dictionary_columns(table.schema))
    return sink.getvalue()


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
    json_columns = set(json.loads((table.schema.metadata or {}).get(b"kfloop.json_columns", b"[]")))
    return [
        {k: (orjson.loads(v) if k in json_columns else v) for k, v in row.items() if v is not None}
        for row in table.to_pylist()
    ]

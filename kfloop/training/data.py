"""Loading raw data: built-in samples, local CSV/Parquet files and objects on S3/MinIO.

``load_source`` accepts

- ``sample:NAME?knob=value`` (see ``kfloop.training.samples``),
- a local path or ``file://`` URI ending in ``.csv``, ``.parquet`` or ``.pq``,
- ``s3://BUCKET/KEY.csv|.parquet|.pq``, read with the S3 endpoint and credentials from the settings.

Every failure is a kfloop error: a missing file or a corrupt, unreadable or empty one is a
``DataError``, an unsupported source a ``ConfigError``, and an unreachable S3 endpoint or
rejected credentials the ``StorageError`` raised by ``S3Store``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from kfloop.config import Settings
from kfloop.errors import ConfigError, DataError
from kfloop.store.objects import S3Store, sha256_bytes, sha256_file
from kfloop.training.samples import canonical_spec, load_sample

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclasses.dataclass
class LoadedData:
    """A loaded frame, where it came from and a SHA-256 that identifies the input.

    For files and S3 objects ``sha256`` is the digest of the source bytes. For samples it is the
    digest of ``"<canonical spec>\\n<row count>"``, where the canonical spec spells out every knob
    (``churn?age_shift=0.0&concept_drift=0.0&n_rows=5000&seed=0``): generators are deterministic,
    so equal digests mean equal frames.
    """

    frame: pd.DataFrame
    uri: str
    sha256: str


def load_source(source: str, settings: Settings) -> LoadedData:
    """Load ``source`` (a sample spec, a local file or an S3 object) into a DataFrame."""
    source = source.strip()
    if source.startswith("sample:"):
        loaded = _load_sample(source[len("sample:") :])
    elif source.startswith("s3://"):
        loaded = _load_s3(source, settings)
    else:
        loaded = _load_file(local_path(source))
    if len(loaded.frame) == 0:
        raise DataError(f"{loaded.uri} has no rows")
    loaded.frame.columns = _clean_columns(loaded.frame.columns, loaded.uri)
    log.info("loaded %s: %d rows x %d columns", loaded.uri, *loaded.frame.shape)
    return loaded


def _clean_columns(columns: pd.Index, uri: str) -> list[str]:
    """Column names as strings without surrounding whitespace; they must stay unique."""
    names = [str(c).strip() for c in columns]
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataError(f"{uri} has repeated column names {repeated} (after stripping whitespace)")
    return names


def _load_sample(spec: str) -> LoadedData:
    canonical = canonical_spec(spec)
    frame = load_sample(spec)
    digest = hashlib.sha256(f"{canonical}\n{len(frame)}".encode()).hexdigest()
    return LoadedData(frame, f"sample:{canonical}", digest)


def local_path(source: str) -> Path:
    """The local path of a path or ``file://`` source; ConfigError for any other scheme."""
    if source.startswith("file://"):
        url = urlparse(source)
        host = "" if url.netloc in ("", "localhost") else url.netloc  # file://data.csv means ./data.csv
        return Path(unquote(host + url.path))
    if "://" in source:
        raise ConfigError(f"unsupported data source {source!r}: expected sample:NAME, a local path, file:// or s3://")
    return Path(source).expanduser()


def format_of(name: str) -> str:
    """``csv`` or ``parquet`` from a file name's suffix; ConfigError for any other."""
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"unsupported file type {suffix or '(none)'!r} for {name!r}; expected one of {sorted(FORMATS)}"
        )
    return FORMATS[suffix]


def _load_file(path: Path) -> LoadedData:
    kind = format_of(path.name)
    if not path.is_file():
        raise DataError(
            f"data file {str(path)!r} does not exist" if not path.exists() else f"{str(path)!r} is not a file"
        )
    uri = path.resolve().as_uri()
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise DataError(f"cannot read {str(path)!r}: {e.strerror or e}") from e
    return LoadedData(read_table(path, kind, uri), uri, digest)


def s3_location(source: str, settings: Settings) -> tuple[S3Store, str]:
    """The store (the bucket of ``s3://BUCKET/KEY``, on the configured endpoint) and the key."""
    bucket, _, key = source[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ConfigError(f"S3 location {source!r} must look like s3://BUCKET/KEY")
    if not settings.uses_s3:
        raise ConfigError(f"cannot use {source}: no S3 endpoint configured (set KFLOOP_S3_ENDPOINT)")
    try:
        return S3Store.from_settings(settings, bucket=bucket, create_bucket=False), key
    except ValueError as e:  # minio checks bucket and key names before any request
        raise ConfigError(f"S3 location {source!r}: {e}") from e


def _load_s3(source: str, settings: Settings) -> LoadedData:
    key = source[len("s3://") :].partition("/")[2]
    kind = format_of(key) if key else None  # an unsupported file type is named before the endpoint
    store, key = s3_location(source, settings)
    kind = kind or format_of(key)
    try:
        data = store.get(key)
    except ValueError as e:  # minio checks bucket and key names before any request
        raise ConfigError(f"S3 source {source!r}: {e}") from e
    return LoadedData(read_table(data, kind, source), source, sha256_bytes(data))


def read_table(source: Path | bytes, kind: str, uri: str) -> pd.DataFrame:
    """Parse a CSV (pandas) or Parquet (pyarrow, converted once without extra copies) file or
    in-memory object into a DataFrame; ``uri`` names it in errors."""
    try:
        if kind == "csv":
            return pd.read_csv(io.BytesIO(source) if isinstance(source, bytes) else source)
        return _read_parquet(source)
    except pd.errors.EmptyDataError:
        raise DataError(f"{uri} has no rows (the file is empty)") from None
    except (ValueError, OSError, NotImplementedError, pd.errors.ParserError) as e:
        raise DataError(f"cannot read {uri} as {kind}: {_first_line(e)}") from e


def _read_parquet(source: Path | bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pa.BufferReader(source) if isinstance(source, bytes) else str(source)
    return pq.read_table(reader).to_pandas(split_blocks=True, self_destruct=True)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or error.__class__.__name__
    return text.splitlines()[0]

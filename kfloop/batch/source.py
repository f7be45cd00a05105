"""A batch input read in chunks: CSV or Parquet, from a local path or ``s3://BUCKET/KEY`` (downloaded to
a temporary file first, streamed to disk).

Memory holds one chunk at a time: ``chunks()`` yields Arrow tables of at most ``chunk_rows`` rows.
CSV is read with Arrow's streaming reader, the numeric features as numbers (as the encoder would convert
their text: ``pyarrow.compute.cast`` parses text the same way) and every other column as text; at the
first numeric value that does not parse, the rest of the file is read with every column as text, so the
encoder checks it value by value as the servers check request values and sets the bad rows aside (the
usual missing markers, ``NA``, ``null``, empty..., are null).
Not with pandas: its chunked reader takes a line with surplus fields as an index or drops the surplus
without a word (pandas 2.3), where Arrow's reader stops with the line.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from kfloop.config import Settings
from kfloop.errors import DataError
from kfloop.training.data import format_of, local_path, s3_location


class BatchInput:
    """One input file (local, possibly a downloaded copy); ``uri`` names the input in messages."""

    def __init__(self, path: Path, kind: str, uri: str, chunk_rows: int):
        if chunk_rows < 1:
            raise DataError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.path, self.kind, self.uri, self.chunk_rows = path, kind, uri, chunk_rows
        # Parquet text columns read as dictionary arrays (categories: cheaper to read, encode and capture)
        self.dictionary_columns: set[str] = set()
        # CSV columns parsed as numbers (the numeric features), until a value does not parse (see _csv_chunks)
        self.numeric_columns: set[str] = set()
        self.block_size = 1 << 20  # bytes of CSV parsed at a time

    def columns(self) -> list[str]:
        """The input's column names (stripped, as training strips them), read from the header only."""
        try:
            if self.kind == "csv":
                names = _csv_header(self.path)
            else:
                import pyarrow.parquet as pq

                names = list(pq.read_schema(self.path).names)
        except Exception as e:  # noqa: BLE001 - pandas/pyarrow raise many types for an unreadable file
            raise DataError(f"cannot read {self.uri} as {self.kind}: {_first_line(e)}") from e
        return [str(n).strip() for n in names]

    def chunks(self) -> Iterator[pa.Table]:
        """The rows in order, ``chunk_rows`` at a time (the last chunk may be shorter)."""
        try:
            yield from self._csv_chunks() if self.kind == "csv" else self._parquet_chunks()
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed line, a corrupt page...
            raise DataError(f"cannot read {self.uri} as {self.kind}: {_first_line(e)}") from e

    def _csv_chunks(self) -> Iterator[pa.Table]:
        """The numeric features parsed as numbers by the reader (no text columns to build, then convert);
        at the first value that does not parse, the rest of the file (from the first row not yet yielded)
        is read again with every column as text, so the encoder sets the bad rows aside with their reason."""
        raw = _csv_header(self.path)
        yielded = 0
        if self.numeric_columns:
            typed = {n: pa.float64() if n.strip() in self.numeric_columns else pa.string() for n in raw}
            try:
                for table in self._csv_read(raw, typed, 0):
                    yielded += table.num_rows
                    yield table
                return
            except pa.ArrowInvalid:  # a value that is not a number (or a malformed line: the text read names it)
                pass
        yield from self._csv_read(raw, {n: pa.string() for n in raw}, yielded)

    def _csv_read(self, raw: list[str], types: dict, skip: int) -> Iterator[pa.Table]:
        import pyarrow.csv as pacsv

        names = [n.strip() for n in raw]
        convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
        # one thread, no readahead: Arrow's threaded reader parses blocks ahead of the consumer, holding tens of MB
        # more than a chunk; this reader runs on its own thread (kfloop.batch.overlap) beside the prediction
        options = pacsv.ReadOptions(block_size=self.block_size, use_threads=False)
        reader = pacsv.open_csv(self.path, read_options=options, convert_options=convert)
        pending: list[pa.RecordBatch] = []
        held = 0
        try:
            for batch in reader:
                if skip:  # rows an earlier read already yielded
                    dropped = min(skip, batch.num_rows)
                    batch, skip = batch.slice(dropped), skip - dropped
                    if not batch.num_rows:
                        continue
                pending.append(batch)
                held += batch.num_rows
                while held >= self.chunk_rows:
                    table = pa.Table.from_batches(pending)
                    yield table.slice(0, self.chunk_rows).rename_columns(names)
                    rest = table.slice(self.chunk_rows)
                    pending, held = rest.to_batches(), rest.num_rows
            if held:
                yield pa.Table.from_batches(pending).rename_columns(names)
        finally:
            reader.close()  # an open reader's threads abort the interpreter at exit (apache/arrow#34314)

    def _parquet_chunks(self) -> Iterator[pa.Table]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as probe:
            text = [
                c.name
                for c in probe.schema
                if c.physical_type == "BYTE_ARRAY" and c.max_repetition_level == 0 and c.path == c.name
            ]
        dictionary = [n for n in text if str(n).strip() in self.dictionary_columns]
        # streamed (buffer_size): not a whole row group's column chunks at once; one thread (this reader runs on
        # its own thread beside the prediction: Arrow's pool decoding columns in parallel took ~25% more CPU)
        with pq.ParquetFile(self.path, buffer_size=1 << 20, read_dictionary=dictionary or None) as f:
            for batch in f.iter_batches(batch_size=self.chunk_rows, use_threads=False):
                table = pa.Table.from_batches([batch])
                yield table.rename_columns([str(c).strip() for c in table.column_names])


@contextlib.contextmanager
def open_input(source: str, settings: Settings, chunk_rows: int) -> Iterator[BatchInput]:
    """The input at ``source`` (a local path, ``file://`` or ``s3://``); an S3 object is downloaded to a
    temporary file that is removed afterwards."""
    source = source.strip()
    if source.startswith("s3://"):
        store, key = s3_location(source, settings)
        kind = format_of(key)
        with tempfile.TemporaryDirectory(prefix="kfloop-batch-input-") as tmp:
            path = Path(tmp) / Path(key).name
            store.get_file(key, path)
            yield BatchInput(path, kind, source, chunk_rows)
        return
    path = local_path(source)
    kind = format_of(path.name)
    if not path.is_file():
        raise DataError(f"input {str(path)!r} does not exist" if not path.exists() else f"{str(path)!r} is not a file")
    yield BatchInput(path, kind, path.resolve().as_uri(), chunk_rows)


def _csv_header(path: Path) -> list[str]:
    """A CSV file's column names, as Arrow's reader reads them (one thread, closed at once)."""
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16, use_threads=False))
    try:
        return [str(n) for n in reader.schema.names]
    finally:
        reader.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip() or error.__class__.__name__
    return text.splitlines()[0]

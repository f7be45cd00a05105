"""The files a batch job writes, atomically: each is written to a temporary file first and appears at
its location (a local path or ``s3://BUCKET/KEY``) only when the job commits, complete; a failed job
removes its temporary files and leaves nothing at the output locations.

``TableFile`` appends Arrow tables chunk by chunk (CSV or Parquet, by the location's suffix) to its
temporary file; ``Spool`` keeps capture objects on disk until the job commits them to the store.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from kfloop.config import Settings
from kfloop.errors import ConfigError, DataError
from kfloop.store.objects import ObjectStore
from kfloop.training.data import format_of, local_path, s3_location

COMMIT_THREADS = 4  # capture objects put at once when a job commits


def sibling(location: str, suffix: str) -> str:
    """``location`` with its file suffix replaced by ``suffix`` (``out.parquet`` -> ``out.rejects.csv``)."""
    head, sep, name = location.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}{sep}{stem}{suffix}"


class TableFile:
    """One output table written chunk by chunk to a temporary file, moved into place by ``commit``."""

    def __init__(self, location: str, settings: Settings, workdir: Path, dictionary_columns: list[str] | None = None):
        """``dictionary_columns``: when given, a Parquet file gets dictionaries for those columns only and no
        column statistics (what makes writing one cheap next to predicting it); else Arrow's defaults."""
        self.location = location.strip()
        self.dictionary_columns = dictionary_columns
        if self.location.startswith("s3://"):
            self._s3 = s3_location(self.location, settings)
            name = self._s3[1]
            self.kind = format_of(name)
            self.tmp = workdir / f"{uuid.uuid4().hex}-{Path(name).name}"
            self.final: Path | None = None
        else:
            self._s3 = None
            self.final = local_path(self.location).resolve()
            self.kind = format_of(self.final.name)
            if not self.final.parent.is_dir():
                raise ConfigError(f"output folder {str(self.final.parent)!r} does not exist")
            if self.final.is_dir():
                raise ConfigError(f"output {str(self.final)!r} is a folder; give a file path")
            self.tmp = self.final.parent / f".{self.final.name}.tmp-{uuid.uuid4().hex[:12]}"
        self._writer = None
        self._schema: pa.Schema | None = None
        self.rows = 0

    @property
    def uri(self) -> str:
        return self.location if self._s3 else self.final.as_uri()

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                raise DataError(f"rows for {self.location} changed type between chunks: {e}") from e
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema
        if self.kind == "csv":
            import pyarrow.csv as pacsv

            self._writer = pacsv.CSVWriter(str(self.tmp), schema)
        else:
            import pyarrow.parquet as pq

            fast = {} if self.dictionary_columns is None else {"write_statistics": False}
            dictionary = True if self.dictionary_columns is None else list(self.dictionary_columns)
            self._writer = pq.ParquetWriter(str(self.tmp), schema, use_dictionary=dictionary, **fast)

    def close(self, empty_schema: pa.Schema) -> None:
        """Finish the temporary file (with ``empty_schema``'s header when no rows were written)."""
        if self._writer is None:
            self._open(empty_schema)
        self._writer.close()

    def commit(self) -> None:
        if self._s3:
            store, key = self._s3
            store.put_file(key, self.tmp)
            self.tmp.unlink(missing_ok=True)
        else:
            os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # noqa: BLE001,S110 - closing a half-written file on the way out
            pass
        self.tmp.unlink(missing_ok=True)


class Spool:
    """Capture objects kept in a temporary folder until ``commit`` puts them in the store."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.dir = Path(tempfile.mkdtemp(prefix="kfloop-batch-captures-"))
        self.keys: list[str] = []
        self.committed: list[str] = []

    def add(self, key: str, data: bytes) -> None:
        (self.dir / f"{len(self.keys):06d}").write_bytes(data)
        self.keys.append(key)

    def commit(self) -> None:
        """Put every object, ``COMMIT_THREADS`` at a time (a local store syncs each object to disk, an S3 store
        uploads it: waits that overlap); on a failure, delete the ones already put (best effort) and re-raise."""
        try:
            with ThreadPoolExecutor(max(1, min(COMMIT_THREADS, len(self.keys))), "batch-commit") as pool:
                done = [pool.submit(self._put, i, key) for i, key in enumerate(self.keys)]
                try:
                    for future in done:
                        future.result()
                finally:  # an error: put nothing more, and wait for the puts under way (so they can be deleted)
                    for future in done:
                        future.cancel()
        except BaseException:
            for key in self.committed:
                try:
                    self.store.delete(key)
                except Exception:  # noqa: BLE001,S110 - the original error is the one to report
                    pass
            self.committed.clear()
            raise
        finally:
            self.close()

    def _put(self, i: int, key: str) -> None:
        self.store.put(key, (self.dir / f"{i:06d}").read_bytes())
        self.committed.append(key)  # list.append is atomic: puts on several threads

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

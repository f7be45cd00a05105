"""One served request's capture records, kept as the request's own columns (``CaptureBatch``).

The request path hands the writer what it already holds, in O(1): the request's feature values as they
arrived (a V1 body's ``instances``: lists in schema order or objects; V2 inputs: one tensor per feature or
one ``[n, k]`` tensor), the predictor's answer (V1 ``predictions`` or a V2 output), the request's id, time,
version and revision, a new capture id, and, when the decoder saw unseen categories, the rows where those
features encoded as missing. Nothing per row happens there. The writer thread turns batches into
columns (``feature_columns``, ``prediction_rows``: one Python list per feature, built by C-level
transposes) for a Parquet object with one typed column per feature, or into the records of the module
docstring of ``kfloop.monitoring.capture`` (``records``) for JSON Lines; both read back as those records.

A batch is a window ``[start, stop)`` of its request's rows: ``slice`` is O(1), so the writer splits a
large request across stored objects (``batch_size``) or keeps only what fits its buffer. Row ``i`` of the
request is ``<request_id>:<i>`` with capture id ``<capture_id>:<i>``, as ``capture_rows.request_records``
names them. ``to_journal`` / ``from_journal``: one JSON object per batch for the capture journal.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from kfloop.inference.tensors import plain_values
from kfloop.timestamps import rfc3339

JOURNAL_KEY = "kfloop.capture_batch"  # marks a journal line holding a batch (a line without it is one record)
LAYOUTS = ("rows", "objects", "columns", "matrix")  # V1 lists, V1 objects, V2 one input per feature, V2 [n, k]


@dataclasses.dataclass(slots=True)
class CaptureBatch:
    """A served request's rows ``[start, stop)`` as captured (see the module docstring). Not changed once
    made (``slice`` makes a new one); not frozen, as frozen dataclasses take twice as long to make."""

    model: str
    model_version: str
    revision: str
    time: str | float  # RFC 3339, or epoch seconds (formatted by the writer's thread: ``stamp``)
    request_id: str
    capture_id: str
    names: tuple[str, ...]
    layout: str  # one of LAYOUTS
    features: Any  # rows, objects, {name: tensor data} or the [n, k] tensor's data
    predictions: Any  # a V1 answer's ``predictions`` list, or a V2 output ({"shape", "data", ...})
    start: int
    stop: int
    unseen: dict[str, Sequence[int]] = dataclasses.field(default_factory=dict)  # rows coded missing, per feature
    exact: np.ndarray | None = None  # V1 lists of numbers: the decoder's float64 rows (``Decoded.exact``)

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    @property
    def stamp(self) -> str:
        """The request's time as RFC 3339 text."""
        return self.time if isinstance(self.time, str) else rfc3339(self.time)

    def slice(self, start: int, stop: int) -> CaptureBatch:
        """Rows ``start`` to ``stop`` of this batch (positions within the batch)."""
        first = self.start + max(0, start)
        return dataclasses.replace(self, start=first, stop=max(first, min(self.stop, self.start + stop)))

    # -- columns (the writer thread) ---------------------------------------------------------------

    def feature_columns(self) -> dict[str, list]:
        """The window's raw feature values, one list per feature."""
        lo, hi, names = self.start, self.stop, self.names
        if self.layout == "rows":
            rows = self.features[lo:hi]
            return {name: list(map(operator.itemgetter(j), rows)) for j, name in enumerate(names)}
        if self.layout == "objects":
            rows = self.features[lo:hi]
            return {name: list(map(operator.itemgetter(name), rows)) for name in names}
        if self.layout == "columns":
            return {name: plain_values(self.features[name])[lo:hi] for name in names}
        values, width = plain_values(self.features), len(names)
        return {name: values[lo * width + j : hi * width : width] for j, name in enumerate(names)}

    def prediction_rows(self) -> list:
        """The window's predictions, one per row (a V2 output of shape ``[n, k]`` gives lists of ``k``)."""
        if isinstance(self.predictions, list):
            return self.predictions[self.start : self.stop]
        data, shape = plain_values(self.predictions["data"]), list(self.predictions["shape"])
        if len(shape) < 2:
            return data[self.start : self.stop]
        width = int(np.prod(shape[1:]))
        return [data[i : i + width] for i in range(self.start * width, self.stop * width, width)]

    def records(self) -> list[dict]:
        """The window's rows as capture records (``kfloop.monitoring.capture.capture_record``'s fields)."""
        return records_of([self])

    # -- the journal ---------------------------------------------------------------------------------

    def to_journal(self) -> dict:
        """The batch as one JSON-able object (no copy: ``asdict`` would copy the request's values)."""
        return {JOURNAL_KEY: 1, **{name: getattr(self, name) for name in _JOURNAL_FIELDS}}

    @classmethod
    def from_journal(cls, doc: dict) -> CaptureBatch:
        values = {k: v for k, v in doc.items() if k in _JOURNAL_FIELDS}
        values["names"] = tuple(values["names"])
        if values["layout"] not in LAYOUTS:
            raise ValueError(f"capture batch layout {values['layout']!r} is not one of {LAYOUTS}")
        return cls(**values)


_JOURNAL_FIELDS = tuple(f.name for f in dataclasses.fields(CaptureBatch) if f.name != "exact")  # (the rows hold it)


def stamp_times(batches: Sequence[CaptureBatch]) -> None:
    """Set the times given as epoch seconds to their RFC 3339 text (``rfc3339``'s, for all at once: ~0.3 us
    a batch where ``rfc3339`` takes ~3 us)."""
    pending = [b for b in batches if not isinstance(b.time, str)]
    if pending:
        micros = np.round(np.fromiter((b.time for b in pending), np.float64, len(pending)) * 1e6)
        texts = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us").tolist()
        for batch, text in zip(pending, texts):
            batch.time = f"{text}Z"


def columns_of(batches: Sequence[CaptureBatch]) -> dict[str, list]:
    """The raw feature values of the rows of ``batches`` (of one schema), one list per feature: the rows
    of consecutive V1 batches are gathered first and transposed once (per feature, not per request)."""
    names = batches[0].names
    out: dict[str, list] = {name: [] for name in names}
    for layout, run in itertools.groupby(batches, key=operator.attrgetter("layout")):
        if layout not in ("rows", "objects"):
            for batch in run:
                for name, values in batch.feature_columns().items():
                    out[name].extend(values)
            continue
        rows = list(itertools.chain.from_iterable(b.features[b.start : b.stop] for b in run))
        if rows:
            columns = zip(*rows) if layout == "rows" else (map(operator.itemgetter(n), rows) for n in names)
            for name, values in zip(names, columns):
                out[name].extend(values)
    return out


def predictions_of(batches: Sequence[CaptureBatch]) -> list:
    """The predictions of the rows of ``batches``, one per row."""
    return list(itertools.chain.from_iterable(b.prediction_rows() for b in batches))


def unseen_of(batches: Sequence[CaptureBatch]) -> dict[int, dict]:
    """Per row of ``batches`` (position in all their rows) with unseen categories, ``{feature: value}``."""
    out: dict[int, dict] = {}
    at = 0
    for batch in batches:
        columns = batch.feature_columns() if batch.unseen else {}
        for name, rows in batch.unseen.items():
            for i in rows:
                if batch.start <= i < batch.stop and (value := columns[name][i - batch.start]) is not None:
                    out.setdefault(at + i - batch.start, {})[name] = value
        at += batch.n_rows
    return out


def request_ids_of(batches: Sequence[CaptureBatch]) -> list[str]:
    return [f"{b.request_id}:{i}" for b in batches for i in range(b.start, b.stop)]


def capture_ids_of(batches: Sequence[CaptureBatch]) -> list[str]:
    return [f"{b.capture_id}:{i}" for b in batches for i in range(b.start, b.stop)]


def records_of(batches: Sequence[CaptureBatch]) -> list[dict]:
    """The rows of ``batches`` as capture records, one dict each."""
    unseen = unseen_of(batches)
    constants = itertools.chain.from_iterable(
        itertools.repeat((b.stamp, b.model, b.model_version, b.revision), b.n_rows) for b in batches
    )
    features = itertools.chain.from_iterable(_feature_dicts(b) for b in batches)
    return [
        {
            "request_id": request_id,
            "capture_id": capture_id,
            "time": time,
            "model": model,
            "model_version": version,
            "revision": revision,
            "features": row,
            "prediction": prediction,
            "unseen": unseen.get(i, {}),
        }
        for i, (request_id, capture_id, (time, model, version, revision), row, prediction) in enumerate(
            zip(request_ids_of(batches), capture_ids_of(batches), constants, features, predictions_of(batches))
        )
    ]


def _feature_dicts(batch: CaptureBatch):
    """Each row's ``{feature: value}``: a V1 object as it came (not copied), else made from the row."""
    if batch.layout == "objects":
        return batch.features[batch.start : batch.stop]
    names = batch.names
    if batch.layout == "rows":
        return [dict(zip(names, row)) for row in batch.features[batch.start : batch.stop]]
    columns = batch.feature_columns()
    return [dict(zip(names, row)) for row in zip(*(columns[n] for n in names))]


def rows_of(item: dict | CaptureBatch) -> int:
    """Records an item of the writer's buffer stands for: a record dict is one, a batch its rows."""
    return item.n_rows if isinstance(item, CaptureBatch) else 1

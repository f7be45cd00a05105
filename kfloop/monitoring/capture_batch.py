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
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from kfloop.inference.tensors import plain_values

JOURNAL_KEY = "kfloop.capture_batch"  # marks a journal line holding a batch (a line without it is one record)
LAYOUTS = ("rows", "objects", "columns", "matrix")  # V1 lists, V1 objects, V2 one input per feature, V2 [n, k]


@dataclasses.dataclass(frozen=True)
class CaptureBatch:
    """A served request's rows ``[start, stop)`` as captured (see the module docstring)."""

    model: str
    model_version: str
    revision: str
    time: str
    request_id: str
    capture_id: str
    names: tuple[str, ...]
    layout: str  # one of LAYOUTS
    features: Any  # rows, objects, {name: tensor data} or the [n, k] tensor's data
    predictions: Any  # a V1 answer's ``predictions`` list, or a V2 output ({"shape", "data", ...})
    start: int
    stop: int
    unseen: dict[str, Sequence[int]] = dataclasses.field(default_factory=dict)  # rows coded missing, per feature

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

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

    def unseen_rows(self, columns: dict[str, list] | None = None) -> dict[int, dict]:
        """Per row of the window with unseen categories (position in the window), ``{feature: value}``."""
        out: dict[int, dict] = {}
        if not self.unseen:
            return out
        columns = columns if columns is not None else self.feature_columns()
        for name, rows in self.unseen.items():
            values = columns[name]
            for i in rows:
                if self.start <= i < self.stop and (value := values[i - self.start]) is not None:
                    out.setdefault(i - self.start, {})[name] = value
        return out

    def request_ids(self) -> list[str]:
        return [f"{self.request_id}:{i}" for i in range(self.start, self.stop)]

    def capture_ids(self) -> list[str]:
        return [f"{self.capture_id}:{i}" for i in range(self.start, self.stop)]

    def records(self) -> list[dict]:
        """The window's rows as capture records (``kfloop.monitoring.capture.capture_record``'s fields)."""
        columns = self.feature_columns()
        unseen = self.unseen_rows(columns)
        names = self.names
        rows = zip(*(columns[n] for n in names)) if names else iter([()] * self.n_rows)
        return [
            {
                "request_id": request_id,
                "capture_id": capture_id,
                "time": self.time,
                "model": self.model,
                "model_version": self.model_version,
                "revision": self.revision,
                "features": dict(zip(names, row)),
                "prediction": prediction,
                "unseen": unseen.get(i, {}),
            }
            for i, (request_id, capture_id, row, prediction) in enumerate(
                zip(self.request_ids(), self.capture_ids(), rows, self.prediction_rows())
            )
        ]

    # -- the journal ---------------------------------------------------------------------------------

    def to_journal(self) -> dict:
        """The batch as one JSON-able object (no copy: ``asdict`` would copy the request's values)."""
        return {JOURNAL_KEY: 1, **{name: getattr(self, name) for name in _FIELDS}}

    @classmethod
    def from_journal(cls, doc: dict) -> CaptureBatch:
        values = {k: v for k, v in doc.items() if k in _FIELDS}
        values["names"] = tuple(values["names"])
        if values["layout"] not in LAYOUTS:
            raise ValueError(f"capture batch layout {values['layout']!r} is not one of {LAYOUTS}")
        return cls(**values)


_FIELDS = tuple(f.name for f in dataclasses.fields(CaptureBatch))


def rows_of(item: dict | CaptureBatch) -> int:
    """Records an item of the writer's buffer stands for: a record dict is one, a batch its rows."""
    return item.n_rows if isinstance(item, CaptureBatch) else 1

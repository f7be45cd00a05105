"""Reading one analysis step's data: counter deltas, latency quantiles, captured predictions, quality.

Request counters only grow (the gateway's ``windows``, Prometheus counters), so a step's numbers
are the difference between a snapshot taken when the step began and one taken now
(``window_delta``); a latency quantile is read from a histogram's bucket counts the way
Prometheus' ``histogram_quantile`` does. Predictions come from the transformer's captures of the
revision's model version made since the step began (``CaptureReader``, which decodes each
immutable capture object once), quality from the labeled ones (``labeled_quality``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from kfloop.errors import KfloopError
from kfloop.monitoring.capture_format import decode, parse_key
from kfloop.names import captures_prefix, feedback_prefix
from kfloop.store.objects import ObjectStore

MAX_ROWS = 50_000  # predictions kept per revision and step (the newest)


def window_delta(now: dict | None, before: dict | None) -> dict:
    """``now - before`` of two gateway window snapshots: ``{"requests", "errors", "bounds", "counts"}``.
    A window that shrank (its revision was restarted elsewhere) counts from zero."""
    now = now or {"requests": 0, "errors": 0, "latency_ms": {"bounds": [], "counts": []}}
    before = before or {}
    if before and now["requests"] < before.get("requests", 0):
        before = {}
    counts_now = now["latency_ms"]["counts"]
    counts_before = (before.get("latency_ms") or {}).get("counts") or [0] * len(counts_now)
    return {
        "requests": now["requests"] - before.get("requests", 0),
        "errors": now["errors"] - before.get("errors", 0),
        "bounds": now["latency_ms"]["bounds"],
        "counts": [a - b for a, b in zip(counts_now, counts_before)],
    }


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of bucketed observations (``counts[i]`` in ``(bounds[i-1], bounds[i]]``, the
    last count above the last bound), interpolated linearly within its bucket; None when empty."""
    total = sum(counts)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])  # above the last bound: the bound is all that is known
            lower = bounds[i - 1] if i else 0.0
            return float(lower + (bounds[i] - lower) * (rank - seen) / count)
        seen += count
    return float(bounds[-1])


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


class CaptureReader:
    """The captured predictions of one model, per version, made at or after a time; capture
    objects are immutable, so each is decoded once and kept (only its records from the earliest
    ``since`` asked for on: an earlier one starts the cache over)."""

    def __init__(self, store: ObjectStore, model: str, max_rows: int = MAX_ROWS):
        self.store, self.model, self.max_rows = store, model, max_rows
        self._records: dict[str, list[dict]] = {}
        self._floor: str | None = None

    def records(self, version: int | str, since: str) -> list[dict]:
        """Capture records of ``version`` with ``time >= since`` (RFC 3339, UTC), oldest first."""
        if self._floor is None or since < self._floor:
            self._records, self._floor = {}, since
        out = []
        for key in self._keys(str(version), since):
            if key not in self._records:
                parsed = parse_key(key)
                rows = decode(self.store.get(key), parsed, self.store.uri(key)) if parsed else []
                self._records[key] = [r for r in rows if str(r.get("time", "")) >= self._floor]
            out.extend(r for r in self._records[key] if str(r.get("time", "")) >= since)
        out.sort(key=lambda r: str(r.get("time", "")))
        return out[-self.max_rows :]

    def predictions(self, version: int | str, since: str) -> list:
        return [r["prediction"] for r in self.records(version, since) if r.get("prediction") is not None]

    def _keys(self, version: str, since: str) -> list[str]:
        """Capture objects of ``version`` in day partitions from ``since``'s day on."""
        first = dt.date.fromisoformat(since[:10])
        days = (dt.datetime.now(dt.timezone.utc).date() - first).days + 1
        prefix = captures_prefix(self.model, version)
        if not 0 < days <= 3:  # an old (or future) start: one listing of the version, filtered by day
            keys = [(k, parse_key(k)) for k in self.store.list(prefix)]
            return [k for k, parsed in keys if parsed is not None and parsed.day >= first.isoformat()]
        return [k for i in range(days) for k in self.store.list(f"{prefix}{first + dt.timedelta(days=i)}/")]


def labeled_quality(
    store: ObjectStore, model: str, schema_doc: dict | None, version: int | str, since: str
) -> dict | None:
    """The primary quality metric (accuracy / rmse) of ``version``'s labeled predictions made since
    ``since``: ``{"metric", "value", "n"}``; None when the model has no labels (or no schema)."""
    if schema_doc is None or not store.list(feedback_prefix(model)):
        return None
    from kfloop.monitoring import quality  # pandas and scikit-learn, only when labels exist
    from kfloop.monitoring.feedback import labeled_frame
    from kfloop.schema import FeatureSchema

    schema = FeatureSchema.from_dict(schema_doc)
    frame = labeled_frame(store, model, schema, version=str(version), since=since)
    metric = quality.DEFAULT_METRIC[schema.task]
    if not len(frame):
        return {"metric": metric, "value": None, "n": 0}
    try:
        value = quality.quality_metrics(schema, frame[schema.target], frame["prediction"])[metric]
    except KfloopError:
        value = None
    return {"metric": metric, "value": value, "n": len(frame)}

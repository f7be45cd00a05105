"""The drift reference of a version trained because the served traffic drifted (the rebaseline policy).

A version's drift reference must describe what it is expected to see. The training split does for a
version trained on the original data. It does not for a version that a drift event had retrained:
its training data is still mostly the old distribution (``combined``), and the labeled rows of the
drifted traffic arrive only after their labels (often after the run started). Its windows on the
new traffic would drift again, and the trigger would retrain forever.

So a run started by ``io.kfloop.drift.detected`` gets a reference of its own: the rows served (any
version, as captured) from the start of the window whose drift started the run until the run is
launched, the most recent ``max_rows`` of them. With ``consecutive_windows`` of 2 or more that
window lies wholly after the shift (the window the shift began in is the streak's first). Labels
are not needed: the reference only describes the features. Too few rows (fewer than ``min_rows``,
e.g. captures not written yet) leave the pipeline's default, the training split, and say so.

The rows are written as a Parquet file of the schema's feature columns (raw values as captured:
numbers, category labels as text), the pipeline parameter ``drift_reference`` names it (uploaded to
``retraining/<model>/<time>-reference.parquet`` with S3 settings), and the baseline step fits the
detector on it. Runs started for any other reason (quality, schedule, by hand) keep the training split.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from kfloop import timestamps
from kfloop.config import Settings
from kfloop.monitoring.capture import read_captures
from kfloop.names import DRIFT_DETECTED, RETRAINING_PREFIX, event_key, key_segment
from kfloop.schema import FeatureSchema, label_key
from kfloop.store.objects import ObjectStore, open_store

log = logging.getLogger(__name__)

MIN_REFERENCE_ROWS = 50
MAX_REFERENCE_ROWS = 10_000
# a row is captured just before it is queued for drift checking (the window's start is the submit time)
CAPTURE_SLACK = dt.timedelta(milliseconds=20)
# how long a run's launch waits for the drifted window's captures to be stored: a transformer writes
# them in batches at least every capture_flush_seconds (default 5 s), so twice that and some slack
CAPTURE_WAIT_S = 12.0


def drift_onset(event: dict) -> dt.datetime | None:
    """When the drift that ``event`` reports was first served: the start of its window (recorded by the
    drift monitor), else the event's time; None for an event that is not a drift event."""
    if event.get("type") != DRIFT_DETECTED:
        return None
    outer = event.get("data") if isinstance(event.get("data"), dict) else {}
    inner = outer.get("data") if isinstance(outer.get("data"), dict) else outer
    start = inner.get("window_start") or outer.get("window_start")
    for value, slack in ((start, CAPTURE_SLACK), (event.get("time"), dt.timedelta(0))):
        try:
            return timestamps.parse_time(str(value)) - slack
        except ValueError:
            continue
    return None


def drift_window_end(event: dict) -> dt.datetime | None:
    """The end of the drifted window that ``event`` reports (when the monitor recorded it), else None."""
    if event.get("type") != DRIFT_DETECTED:
        return None
    outer = event.get("data") if isinstance(event.get("data"), dict) else {}
    inner = outer.get("data") if isinstance(outer.get("data"), dict) else outer
    try:
        return timestamps.parse_time(str(inner.get("window_end") or outer.get("window_end")))
    except ValueError:
        return None


def stored_event(store: ObjectStore, model: str, event_id: str) -> dict | None:
    """The event ``event_id`` of ``model`` from the event log, None when it is not there."""
    import json

    key = event_key(model, event_id)
    if not store.exists(key):
        return None
    try:
        return json.loads(store.get(key))
    except ValueError:
        return None


def build_reference_data(
    settings: Settings,
    model: str,
    schema: FeatureSchema,
    since: dt.datetime,
    out_path: str | Path,
    now: dt.datetime | None = None,
    *,
    min_rows: int = MIN_REFERENCE_ROWS,
    max_rows: int = MAX_REFERENCE_ROWS,
    complete_after: dt.datetime | None = None,
    wait_s: float = CAPTURE_WAIT_S,
) -> dict:
    """Write the rows served between ``since`` and ``now`` (the last ``max_rows``) to ``out_path``;
    returns ``{"drift_reference": source or None, "reference_rows", "reference_since", "reference_note"}``
    (``drift_reference`` None: fewer than ``min_rows``, the training split stays the reference).

    With ``complete_after`` (the drifted window's end) it first waits, at most ``wait_s``, until a row
    served at or after that time is stored: transformers write captures in batches, so right after the
    drift event the window's own rows may still be in memory."""
    import time

    import pandas as pd

    store = open_store(settings)
    now = now or timestamps.now()
    deadline = time.monotonic() + wait_s
    while True:
        records = [r for r in read_captures(store, model, since=since) if _time(r) <= now]
        caught_up = complete_after is None or any(_time(r) >= complete_after for r in records)
        if caught_up or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    records = records[-max_rows:]
    result = {"reference_rows": len(records), "reference_since": timestamps.rfc3339(since)}
    if len(records) < min_rows:
        note = (
            f"only {len(records)} served rows since {result['reference_since']} (fewer than {min_rows}): "
            "the drift reference is the training split"
        )
        log.warning("drift reference for %s: %s", model, note)
        return {**result, "drift_reference": None, "reference_note": note}
    features = [r.get("features") if isinstance(r.get("features"), dict) else {} for r in records]
    columns = {}
    for feature in schema.features:
        values = pd.Series([row.get(feature.name) for row in features], dtype=object)
        if feature.kind == "numeric":
            columns[feature.name] = pd.to_numeric(values, errors="coerce")
        else:
            columns[feature.name] = values.map(lambda v: None if v is None else label_key(v)).astype(object)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_parquet(path, index=False)
    source = _publish(settings, store, model, path, now)
    note = f"{len(records)} rows served since {result['reference_since']}"
    log.info("drift reference for %s: %s at %s", model, note, source)
    return {**result, "drift_reference": source, "reference_note": note}


def _publish(settings: Settings, store: ObjectStore, model: str, path: Path, now: dt.datetime) -> str:
    if not settings.uses_s3:
        return str(path.resolve())
    key = f"{RETRAINING_PREFIX}/{key_segment(model)}/{now:%Y%m%dT%H%M%S%fZ}-reference.parquet"
    store.put_file(key, path)
    return store.uri(key)


def _time(record: dict) -> dt.datetime:
    try:
        return timestamps.parse_time(str(record.get("time")))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)

"""Training data for a retraining run: the original training data and the labeled served traffic.

Strategies (``kfloop.retraining.policy.DATA_STRATEGIES``):

- ``combined``: the original data plus every labeled captured row (all model versions);
- ``recent``: the labeled captured rows only (the model forgets the original data);
- ``window``: the labeled captured rows predicted in the last ``window_days`` before ``now``.
  The original data has no timestamps, so it cannot be cut to a window; it is added whole only
  when the window holds fewer than ``min_window_rows`` labeled rows (default
  ``WINDOW_MIN_ROWS``), too few to train a model on their own.

The result is one Parquet file with the schema's feature columns (schema order) and the target,
ready to be the training pipeline's ``source``. Captured feature values are the raw values clients
sent (unseen categories included, so the new model can learn them): numeric features become
numbers (anything else missing), categorical values strings (``kfloop.schema.label_key``).
Classification targets are written as the class names, as integers when every class is one.
With S3 settings the file is also uploaded to ``retraining/<model>/<time>.parquet`` in the
bucket, and the returned ``source`` is that ``s3://`` URI.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import pandas as pd

from kfloop.config import Settings
from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.feedback import labeled_frame
from kfloop.names import RETRAINING_PREFIX as PREFIX
from kfloop.names import key_segment
from kfloop.retraining.policy import DATA_STRATEGIES
from kfloop.schema import FeatureSchema, label_key
from kfloop.store.objects import open_store
from kfloop.training.data import load_source

log = logging.getLogger(__name__)

WINDOW_MIN_ROWS = 1000
_INTEGER = re.compile(r"^-?\d+$")


def build_training_data(
    strategy: str,
    settings: Settings,
    model: str,
    schema: FeatureSchema,
    original_source: str,
    out_path: str | Path,
    window_days: int = 7,
    now: dt.datetime | None = None,
    *,
    min_window_rows: int = WINDOW_MIN_ROWS,
) -> dict:
    """Write the training data of ``strategy`` to ``out_path`` (Parquet) and return
    ``{"source", "rows", "original_rows", "captured_rows", "strategy"}``."""
    if strategy not in DATA_STRATEGIES:
        raise ConfigError(f"retraining data strategy {strategy!r} is not one of {list(DATA_STRATEGIES)}")
    if strategy == "window" and (isinstance(window_days, bool) or not isinstance(window_days, int) or window_days < 1):
        raise ConfigError(f"window_days {window_days!r} must be a positive number of days")
    now = _utc(now)
    captured = _captured(settings, model, schema, strategy, window_days, now)
    use_original = strategy == "combined" or (strategy == "window" and len(captured) < min_window_rows)
    original = training_columns(schema, _original(original_source, settings, schema)) if use_original else None
    frames = [f for f in (original, captured) if f is not None and len(f)]
    if not frames:
        raise DataError(
            f"no training rows for model {model!r} with strategy {strategy!r}: no labeled captured "
            f"traffic{_window_text(strategy, window_days, now)}; post ground-truth labels first "
            f"or use the 'combined' strategy"
        )
    frame = pd.concat(frames, ignore_index=True)
    _write_parquet(frame, Path(out_path))
    result = {
        "source": _publish(settings, model, Path(out_path), now),
        "rows": len(frame),
        "original_rows": 0 if original is None else len(original),
        "captured_rows": len(captured),
        "strategy": strategy,
    }
    log.info(
        "retraining data for %s (%s): %d rows (%d original, %d captured) at %s",
        model,
        strategy,
        result["rows"],
        result["original_rows"],
        result["captured_rows"],
        result["source"],
    )
    return result


def _captured(
    settings: Settings, model: str, schema: FeatureSchema, strategy: str, window_days: int, now: dt.datetime
) -> pd.DataFrame:
    since = now - dt.timedelta(days=window_days) if strategy == "window" else None
    frame = labeled_frame(open_store(settings), model, schema, since=since)
    if strategy == "window":
        frame = frame[frame["time"] <= pd.Timestamp(now)]
    return training_columns(schema, frame)


def _window_text(strategy: str, window_days: int, now: dt.datetime) -> str:
    if strategy != "window":
        return ""
    return f" in the {window_days} days before {now:%Y-%m-%dT%H:%M:%SZ}"


def _original(source: str, settings: Settings, schema: FeatureSchema) -> pd.DataFrame:
    loaded = load_source(source, settings)
    missing = [c for c in (*schema.names, schema.target) if c not in loaded.frame.columns]
    if missing:
        raise DataError(f"original data {loaded.uri} lacks the schema's columns {missing}")
    frame = loaded.frame.dropna(subset=[schema.target])
    if len(frame) < len(loaded.frame):
        log.warning("original data %s: dropped %d rows without a target", loaded.uri, len(loaded.frame) - len(frame))
    return frame


def training_columns(schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """The schema's feature columns and target of ``frame``, with the types described above."""
    out = {}
    for feature in schema.features:
        values = frame[feature.name]
        if feature.kind == "numeric":
            out[feature.name] = pd.to_numeric(values.astype(object), errors="coerce")
        else:
            out[feature.name] = values.map(_category_value).astype(object)
    out[schema.target] = _target(schema, frame[schema.target])
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _category_value(value: object) -> str | None:
    try:
        missing = bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and other containers
        missing = False
    return None if missing else label_key(value)


def _target(schema: FeatureSchema, values: pd.Series) -> pd.Series:
    if schema.task == "regression":
        return pd.to_numeric(values.astype(object), errors="coerce").astype("float64")
    names = values.map(label_key)
    if schema.classes and all(_INTEGER.match(c) for c in schema.classes):
        return names.astype("int64")
    return names.astype(object)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def _publish(settings: Settings, model: str, path: Path, now: dt.datetime) -> str:
    """Where the pipeline reads the file: the local path, or its copy in the S3 bucket."""
    if not settings.uses_s3:
        return str(path.resolve())
    store = open_store(settings)
    key = f"{PREFIX}/{key_segment(model)}/{now:%Y%m%dT%H%M%S%fZ}.parquet"
    store.put_file(key, path)
    return store.uri(key)


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc) if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)

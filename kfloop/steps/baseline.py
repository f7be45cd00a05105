"""baseline: the drift detector's reference, and the baseline statistics and constraints.

By default the drift reference is the training split. ``reference`` (the pipeline parameter
``drift_reference``: a local file, an ``s3://`` object or a ``sample:`` spec) replaces it: the
retraining trigger passes the rows served since the drift began for a run that drift started
(``kfloop.retraining.reference_data``), so the new version's windows on that traffic do not drift
again. ``reference.json`` in the detector folder says which it was (``source``, ``rows``).

The baseline statistics and constraints (``kfloop.monitoring.constraints``) describe the training
features, plus the ``reference`` rows when given (what the new version is expected to see: its
ranges and categories too), and the model's predictions on the validation split when there is one
(held-out rows: on its own training rows a model is more confident than on new ones, which would make
clean windows look drifted), else on the training rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kfloop.config import Settings
from kfloop.errors import DataError
from kfloop.monitoring import constraints, drift
from kfloop.schema import FeatureSchema
from kfloop.store import bundle
from kfloop.training.booster import load_model, predict

REFERENCE_FILE = "reference.json"


def fit_drift_baseline(
    model_dir: str,
    train_path: str,
    out_dir: str,
    backend: str = "scipy",
    p_val: float = 0.05,
    reference: str = "",
    settings: Settings | None = None,
    valid_path: str | None = None,
) -> None:
    """Fit the drift detector reference on the training features (or ``reference``'s) and save it, with
    the baseline statistics and constraints beside it (``write_constraints``)."""
    schema = bundle.load_schema(model_dir)
    if reference.strip():
        from kfloop.training.data import load_source

        loaded = load_source(reference, settings or Settings())
        missing = [c for c in schema.names if c not in loaded.frame.columns]
        if missing:
            raise DataError(f"drift reference {loaded.uri} lacks the schema's feature columns {missing}")
        frame, source = loaded.frame[schema.names], loaded.uri
        train_df = pd.read_parquet(train_path, columns=schema.names)
        expected = pd.concat([train_df, frame], ignore_index=True)
    else:
        frame = expected = pd.read_parquet(train_path, columns=schema.names)
        source = "training split"
    detector = drift.fit_baseline(schema, schema.encode_frame(frame), backend=backend, p_val=p_val)
    folder = drift.save_detector(detector, out_dir)
    (Path(folder) / REFERENCE_FILE).write_text(json.dumps({"source": source, "rows": len(frame)}, indent=1))
    write_constraints(model_dir, schema, expected, out_dir, valid_path)


def write_constraints(
    model_dir: str, schema: FeatureSchema, frame: pd.DataFrame, out_dir: str, valid_path: str | None = None
) -> None:
    """The bundle's ``drift/statistics.json`` and ``constraints.json``: the features of ``frame``, the
    model's predictions on ``valid_path`` when it has rows, else on ``frame``."""
    X = schema.encode_frame(frame)
    X_pred, source = X, "training"
    if valid_path:
        X_valid = schema.encode_frame(pd.read_parquet(valid_path, columns=schema.names))
        if len(X_valid):
            X_pred, source = X_valid, "validation"
    booster = load_model(Path(model_dir) / bundle.MODEL_FILE)
    baseline = constraints.compute(schema, X, predict(booster, schema, X_pred), prediction_rows=source)
    constraints.save_baseline(baseline, out_dir)

"""baseline: the drift detector's reference, fitted on the training features, and the baseline
statistics and constraints (``kfloop.monitoring.constraints``): of the training features, and of the
model's predictions on the validation split when there is one (held-out rows: on its own training
rows a model is more confident than on new ones, which would make clean windows look drifted), else
on the training rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kfloop.monitoring import constraints, drift
from kfloop.schema import FeatureSchema
from kfloop.store import bundle
from kfloop.training.booster import load_model, predict


def fit_drift_baseline(
    model_dir: str,
    train_path: str,
    out_dir: str,
    backend: str = "alibi",
    p_val: float = 0.05,
    valid_path: str | None = None,
) -> None:
    """Fit the drift detector reference on the training features and save it, with the baseline
    statistics and constraints beside it (``write_constraints``)."""
    schema = bundle.load_schema(model_dir)
    train_df = pd.read_parquet(train_path, columns=schema.names)
    detector = drift.fit_baseline(schema, schema.encode_frame(train_df), backend=backend, p_val=p_val)
    drift.save_detector(detector, out_dir)
    write_constraints(model_dir, schema, train_df, out_dir, valid_path)


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

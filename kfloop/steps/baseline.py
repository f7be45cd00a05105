"""baseline: the drift detector's reference, fitted on the training features, and the baseline
statistics and constraints (``kfloop.monitoring.constraints``) of the training features and predictions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kfloop.monitoring import constraints, drift
from kfloop.store import bundle
from kfloop.training.booster import load_model, predict


def fit_drift_baseline(
    model_dir: str, train_path: str, out_dir: str, backend: str = "alibi", p_val: float = 0.05
) -> None:
    """Fit the drift detector reference on the training features and save it, with the baseline
    statistics and constraints beside it (the bundle's ``drift/statistics.json``, ``constraints.json``)."""
    schema = bundle.load_schema(model_dir)
    train_df = pd.read_parquet(train_path, columns=schema.names)
    X = schema.encode_frame(train_df)
    detector = drift.fit_baseline(schema, X, backend=backend, p_val=p_val)
    drift.save_detector(detector, out_dir)
    booster = load_model(Path(model_dir) / bundle.MODEL_FILE)
    constraints.save_baseline(constraints.compute(schema, X, predict(booster, schema, X)), out_dir)

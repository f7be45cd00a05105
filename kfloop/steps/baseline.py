"""baseline: the drift detector's reference, fitted on the training features."""

from __future__ import annotations

import pandas as pd

from kfloop.monitoring import drift
from kfloop.store import bundle


def fit_drift_baseline(
    model_dir: str, train_path: str, out_dir: str, backend: str = "alibi", p_val: float = 0.05
) -> None:
    """Fit the drift detector reference on the training features and save it."""
    schema = bundle.load_schema(model_dir)
    train_df = pd.read_parquet(train_path, columns=schema.names)
    detector = drift.fit_baseline(schema, schema.encode_frame(train_df), backend=backend, p_val=p_val)
    drift.save_detector(detector, out_dir)

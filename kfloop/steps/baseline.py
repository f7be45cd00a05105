"""baseline: the drift detector's reference, fitted on the training features or on given data.

By default the reference is the training split. ``reference`` (the pipeline parameter
``drift_reference``: a local file, an ``s3://`` object or a ``sample:`` spec) replaces it: the
retraining trigger passes the rows served since the drift began for a run that drift started
(``kfloop.retraining.reference_data``), so the new version's windows on that traffic do not drift
again. ``reference.json`` in the detector folder says which it was (``source``, ``rows``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kfloop.config import Settings
from kfloop.errors import DataError
from kfloop.monitoring import drift
from kfloop.store import bundle

REFERENCE_FILE = "reference.json"


def fit_drift_baseline(
    model_dir: str,
    train_path: str,
    out_dir: str,
    backend: str = "alibi",
    p_val: float = 0.05,
    reference: str = "",
    settings: Settings | None = None,
) -> None:
    """Fit the drift detector reference on the training features (or ``reference``'s) and save it."""
    schema = bundle.load_schema(model_dir)
    if reference.strip():
        from kfloop.training.data import load_source

        loaded = load_source(reference, settings or Settings())
        missing = [c for c in schema.names if c not in loaded.frame.columns]
        if missing:
            raise DataError(f"drift reference {loaded.uri} lacks the schema's feature columns {missing}")
        frame, source = loaded.frame[schema.names], loaded.uri
    else:
        frame, source = pd.read_parquet(train_path, columns=schema.names), "training split"
    detector = drift.fit_baseline(schema, schema.encode_frame(frame), backend=backend, p_val=p_val)
    folder = drift.save_detector(detector, out_dir)
    (Path(folder) / REFERENCE_FILE).write_text(json.dumps({"source": source, "rows": len(frame)}, indent=1))

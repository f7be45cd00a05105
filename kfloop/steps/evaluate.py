"""evaluate: metrics of the candidate and of production on the same test split, the naive baseline
(fitted on the training labels), and the gate."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from kfloop.config import Settings
from kfloop.names import validate_model_name
from kfloop.schema import FeatureSchema
from kfloop.steps.common import load_model_dir, write_json
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from kfloop.training import booster as train
from kfloop.training import evaluate

log = logging.getLogger(__name__)


def _score(model_dir: str | Path, test: pd.DataFrame) -> tuple[FeatureSchema, np.ndarray, dict]:
    booster, schema = load_model_dir(model_dir)
    pred = train.predict(booster, schema, schema.encode_frame(test))
    y = schema.encode_labels(test[schema.target])
    return schema, pred, evaluate.compute_metrics(schema, y, pred)


def evaluate_model(
    model_dir: str,
    test_path: str,
    model_name: str,
    settings: Settings,
    out_path: str,
    threshold: float,
    tolerance: float,
    train_path: str,
) -> dict:
    """Metrics of the candidate and of the production version (same test split), the naive baseline
    fitted on the training split's labels, and the gate (``threshold`` as ``decide_gate`` reads it:
    ``evaluate.AUTO_THRESHOLD`` derives it from the baseline)."""
    test = pd.read_parquet(test_path)
    schema, _, metrics = _score(model_dir, test)
    y_train = schema.encode_labels(pd.read_parquet(train_path, columns=[schema.target])[schema.target])
    baseline = evaluate.naive_baseline(schema, y_train, schema.encode_labels(test[schema.target]))
    production = _production_metrics(model_name, settings, test)
    gate = evaluate.decide_gate(
        schema.task, metrics, production and production["metrics"], threshold, tolerance, baseline
    )
    doc = {
        "task": schema.task,
        "metrics": metrics,
        "baseline": baseline.to_dict(),
        "production": production,
        "gate": gate.to_dict(),
    }
    write_json(out_path, doc)
    log.info("gate %s: %s", "passed" if gate.passed else "failed", gate.reason)
    return doc


def _production_metrics(model_name: str, settings: Settings, test: pd.DataFrame) -> dict | None:
    registry = Registry(open_store(settings))
    record = registry.production(validate_model_name(model_name))
    if record is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        _, path = registry.fetch_bundle(record.ref, tmp)
        _, _, metrics = _score(path, test)
    return {"version": record.version, "metrics": metrics}

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
from kfloop.training.bias import BiasLimits, model_bias_report

log = logging.getLogger(__name__)


def _bias_gate(
    schema: FeatureSchema, test: pd.DataFrame, pred: np.ndarray, sensitive_feature: str, bias: dict | None
) -> evaluate.BiasGate | None:
    """The candidate's bias check (None without a sensitive feature, or for a regressor)."""
    options = dict(bias or {})
    action = evaluate.check_bias_action(options.pop("action", ""))
    limits = BiasLimits(**options)
    if not sensitive_feature or schema.task == "regression":
        return None
    report = model_bias_report(schema, test, pred, sensitive_feature)
    return evaluate.decide_bias_gate(report, limits, action)


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
    sensitive_feature: str = "",
    bias: dict | None = None,
) -> dict:
    """Metrics of the candidate and of the production version (same test split), the naive baseline
    fitted on the training split's labels, and the gate (``threshold`` as ``decide_gate`` reads it:
    ``evaluate.AUTO_THRESHOLD`` derives it from the baseline).

    With ``sensitive_feature`` (classifiers) the candidate's bias is checked too: ``bias`` holds
    ``action`` (``evaluate.BIAS_ACTIONS``) and ``BiasLimits`` fields; the check is ``bias_gate`` in
    the document, and a failure with action "reject" fails the gate."""
    test = pd.read_parquet(test_path)
    schema, pred, metrics = _score(model_dir, test)
    bias_gate = _bias_gate(schema, test, pred, sensitive_feature, bias)
    y_train = schema.encode_labels(pd.read_parquet(train_path, columns=[schema.target])[schema.target])
    baseline = evaluate.naive_baseline(schema, y_train, schema.encode_labels(test[schema.target]))
    production = _production_metrics(model_name, settings, test)
    gate = evaluate.decide_gate(
        schema.task, metrics, production and production["metrics"], threshold, tolerance, baseline
    )
    if bias_gate is not None:
        gate = evaluate.apply_bias_gate(gate, bias_gate)
    doc = {
        "task": schema.task,
        "metrics": metrics,
        "baseline": baseline.to_dict(),
        "production": production,
        "gate": gate.to_dict(),
        "bias_gate": bias_gate and bias_gate.to_dict(),
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

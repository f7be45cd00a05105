"""analyze: bias per group of a sensitive feature and global SHAP feature importance."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kfloop.steps.common import load_model_dir, read_json, write_json
from kfloop.training import booster as train
from kfloop.training import explain, model_report
from kfloop.training.bias import model_bias_report


def analyze(
    model_dir: str,
    test_path: str,
    sensitive_feature: str,
    json_path: str,
    report_path: str,
    evaluation_path: str | None = None,
    positive_class: str = "",
) -> dict:
    """Bias per group of ``sensitive_feature`` (classification) and global SHAP importance."""
    test = pd.read_parquet(test_path)
    booster, schema = load_model_dir(model_dir)
    X = schema.encode_frame(test)
    pred = train.predict(booster, schema, X)
    bias = None
    if sensitive_feature and schema.task != "regression":
        bias = model_bias_report(schema, test, pred, sensitive_feature, positive_class)
    importance = explain.feature_importance(booster, schema, X)
    evaluation = read_json(evaluation_path) if evaluation_path else {}
    doc = {"bias": bias, "importance": importance}
    write_json(json_path, doc)
    Path(report_path).write_text(
        model_report.render_markdown(evaluation.get("metrics", {}), evaluation.get("gate", {}), bias, importance)
    )
    return doc

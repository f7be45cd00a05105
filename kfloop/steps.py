"""The pipeline's steps as ordinary functions over file paths.

Each KFP component in ``components/`` is a thin wrapper that maps its artifact paths to one of
these functions; the benchmark calls them directly in one process (the floor the pipeline is
measured against), and tests call them without KFP. Artifacts:

- process: train/valid/test Parquet files, ``schema.json``, a Markdown data-quality report
- train: a model folder with ``model.ubj`` (UBJSON), ``schema.json`` and ``params.json``
- evaluate: ``evaluation.json`` (metrics of candidate and production, gate decision)
- analyze: ``bias.json`` (bias and feature importance) and a Markdown report
- baseline: the drift detector folder (``kfloop.drift``)
- register: a model bundle (``kfloop.bundle``) registered as the next version
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from kfloop import bundle, drift, evaluate, explain, model_report, split, train, validation
from kfloop.bias import bias_report
from kfloop.config import Settings
from kfloop.data import load_source
from kfloop.errors import ConfigError
from kfloop.registry import Registry, validate_name
from kfloop.schema import FeatureSchema, infer_schema
from kfloop.storage import open_store

log = logging.getLogger(__name__)
PARAMS_FILE = "params.json"


def _write_json(path: str | Path, doc: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))


def _read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def _read_schema(path: str | Path) -> FeatureSchema:
    return FeatureSchema.from_dict(_read_json(path))


def process(source: str, target: str, settings: Settings, train_path: str, valid_path: str, test_path: str,
            schema_path: str, report_path: str, task: str = "", seed: int = 0, valid_fraction: float = 0.15,
            test_fraction: float = 0.15, rules: validation.QualityRules | None = None) -> dict:
    """Load, validate and split raw data; a quality violation raises ``DataQualityError``."""
    loaded = load_source(source, settings)
    report = validation.validate(loaded.frame, target, rules or validation.QualityRules())
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(report.to_markdown())
    report.raise_for_violations()
    schema = infer_schema(loaded.frame, target, task or None)
    parts = split.split(loaded.frame, target, schema.task, seed=seed, valid_fraction=valid_fraction,
                        test_fraction=test_fraction)
    for frame, path in zip(parts, (train_path, valid_path, test_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    _write_json(schema_path, schema.to_dict())
    log.info("processed %d rows from %s: task %s, %d features", len(loaded.frame), loaded.uri, schema.task,
             len(schema.features))
    return {"data_uri": loaded.uri, "data_sha256": loaded.sha256, "rows": len(loaded.frame), "task": schema.task}


def train_model(train_path: str, valid_path: str, schema_path: str, params: dict, model_dir: str) -> dict:
    """Train an XGBoost model and write the model folder (UBJSON model, schema, parameters)."""
    schema, chosen = _read_schema(schema_path), train.TrainParams.from_mapping(params)
    booster = train.train(schema, pd.read_parquet(train_path), pd.read_parquet(valid_path), chosen)
    out = Path(model_dir)
    train.save_model(booster, out / bundle.MODEL_FILE)
    _write_json(out / bundle.SCHEMA_FILE, schema.to_dict())
    _write_json(out / PARAMS_FILE, chosen.to_dict())
    return {"rounds": booster.num_boosted_rounds()}


def load_model_dir(model_dir: str | Path):
    """The booster and schema of a model folder or bundle."""
    model_dir = Path(model_dir)
    return train.load_model(model_dir / bundle.MODEL_FILE), bundle.load_schema(model_dir)


def _score(model_dir: str | Path, test: pd.DataFrame) -> tuple[FeatureSchema, np.ndarray, dict]:
    booster, schema = load_model_dir(model_dir)
    pred = train.predict(booster, schema, schema.encode_frame(test))
    y = schema.encode_labels(test[schema.target])
    return schema, pred, evaluate.compute_metrics(schema, y, pred)


def evaluate_model(model_dir: str, test_path: str, model_name: str, settings: Settings, out_path: str,
                   threshold: float, tolerance: float) -> dict:
    """Metrics of the candidate and of the production version (same test split) and the gate."""
    test = pd.read_parquet(test_path)
    schema, _, metrics = _score(model_dir, test)
    production = _production_metrics(model_name, settings, test)
    gate = evaluate.decide_gate(schema.task, metrics, production and production["metrics"], threshold, tolerance)
    doc = {"task": schema.task, "metrics": metrics, "production": production, "gate": gate.to_dict()}
    _write_json(out_path, doc)
    log.info("gate %s: %s", "passed" if gate.passed else "failed", gate.reason)
    return doc


def _production_metrics(model_name: str, settings: Settings, test: pd.DataFrame) -> dict | None:
    registry = Registry(open_store(settings))
    record = registry.production(validate_name(model_name))
    if record is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        _, path = registry.fetch_bundle(record.ref, tmp)
        _, _, metrics = _score(path, test)
    return {"version": record.version, "metrics": metrics}


def analyze(model_dir: str, test_path: str, sensitive_feature: str, json_path: str, report_path: str,
            evaluation_path: str | None = None, positive_class: str = "") -> dict:
    """Bias per group of ``sensitive_feature`` (classification) and global SHAP importance."""
    test = pd.read_parquet(test_path)
    booster, schema = load_model_dir(model_dir)
    X = schema.encode_frame(test)
    pred = train.predict(booster, schema, X)
    bias = None
    if sensitive_feature and schema.task != "regression":
        if sensitive_feature not in test.columns:
            raise ConfigError(f"sensitive_feature {sensitive_feature!r} is not a column; columns are {schema.names}")
        positive = schema.classes.index(positive_class) if positive_class else len(schema.classes) - 1
        y_true = schema.encode_labels(test[schema.target]) == positive
        bias = bias_report(test[sensitive_feature], y_true, train.predicted_labels(schema, pred) == positive)
        bias["sensitive_feature"], bias["positive_class"] = sensitive_feature, schema.classes[positive]
    importance = explain.feature_importance(booster, schema, X)
    evaluation = _read_json(evaluation_path) if evaluation_path else {}
    doc = {"bias": bias, "importance": importance}
    _write_json(json_path, doc)
    Path(report_path).write_text(model_report.render_markdown(evaluation.get("metrics", {}),
                                                              evaluation.get("gate", {}), bias, importance))
    return doc


def fit_drift_baseline(model_dir: str, train_path: str, out_dir: str, backend: str = "alibi",
                       p_val: float = 0.05) -> None:
    """Fit the drift detector reference on the training features and save it."""
    schema = bundle.load_schema(model_dir)
    train_df = pd.read_parquet(train_path, columns=schema.names)
    detector = drift.fit_baseline(schema, schema.encode_frame(train_df), backend=backend, p_val=p_val)
    drift.save_detector(detector, out_dir)


def assemble_bundle(model_dir: str, evaluation_path: str, analysis_path: str | None, drift_dir: str,
                    out_dir: str | Path) -> Path:
    """Copy the step outputs into one bundle folder and write its manifest."""
    out = Path(out_dir)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    shutil.copyfile(evaluation_path, out / bundle.METRICS_FILE)
    if analysis_path and Path(analysis_path).is_file():
        shutil.copyfile(analysis_path, out / bundle.BIAS_FILE)
    shutil.copytree(drift_dir, out / bundle.DRIFT_DIR, dirs_exist_ok=True)
    bundle.write_manifest(out)
    return out


def register(model_name: str, settings: Settings, model_dir: str, evaluation_path: str,
             analysis_path: str | None, drift_dir: str, lineage: dict, require_approval: bool = False):
    """Register the assembled bundle as the next version of ``model_name``; returns the record."""
    registry = Registry(open_store(settings))
    with tempfile.TemporaryDirectory() as tmp:
        path = assemble_bundle(model_dir, evaluation_path, analysis_path, drift_dir, Path(tmp) / "bundle")
        stage = "pending-approval" if require_approval else "staging"
        lineage = {**lineage, "parameters": _read_json(Path(model_dir) / PARAMS_FILE),
                   "parent_version": getattr(registry.production(model_name), "version", None)}
        record = registry.register(model_name, path, lineage=lineage, stage=stage)
    log.info("registered %s (%s) at %s", record.ref, record.stage, record.bundle_uri)
    return record

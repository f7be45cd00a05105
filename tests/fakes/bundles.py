"""Model bundles for tests: ``make_bundle`` is one as the registry sees it (no real model, any bytes),
``build_bundle`` trains a small real booster on ``churn_frame`` data and writes a verified bundle,
``trained_bundle`` is one as the pipeline's train and baseline steps write it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost

from kfloop.schema import FeatureSchema, infer_schema
from kfloop.store import bundle
from kfloop.store.bundle import MODEL_FILE, SCHEMA_FILE, write_manifest

SCHEMA = {
    "target": "churn",
    "task": "binary",
    "classes": ["0", "1"],
    "features": [
        {"name": "tenure", "kind": "numeric"},
        {"name": "plan", "kind": "categorical", "categories": ["basic", "premium"]},
    ],
}


def make_bundle(root: Path, auc: float) -> Path:
    """model.ubj may be any bytes for the registry; metrics as the evaluate step writes them."""
    root.mkdir(parents=True)
    (root / bundle.MODEL_FILE).write_bytes(f"model {auc}".encode())
    (root / bundle.SCHEMA_FILE).write_text(json.dumps(SCHEMA))
    (root / bundle.METRICS_FILE).write_text(
        json.dumps(
            {
                "task": "binary",
                "metrics": {"auc": auc, "accuracy": 0.8},
                "gate": {"passed": True, "metric": "auc", "reason": f"auc {auc} >= threshold 0.7"},
            }
        )
    )
    bundle.write_manifest(root)
    return root


PLANS = ("basic", "pro", "team")


def churn_frame(n: int = 300, seed: int = 0, categorical: bool = True) -> pd.DataFrame:
    """A churn-like table: numeric tenure and charges, a string plan (optional), a 0/1 target."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    charges = rng.normal(70, 20, n).round(2)
    charges[rng.random(n) < 0.05] = np.nan
    plan = rng.choice(PLANS, n)
    score = -0.04 * tenure + 0.03 * np.nan_to_num(charges, nan=70) + (plan == "basic") * 1.0
    churned = (score + rng.normal(0, 0.5, n) > np.median(score)).astype(int)
    df = pd.DataFrame({"tenure": tenure, "charges": charges, "plan": plan, "churned": churned})
    return df if categorical else df.drop(columns=["plan"])


def build_bundle(
    root: Path, df: pd.DataFrame, target: str, task: str | None = None
) -> tuple[Path, FeatureSchema, xgboost.Booster]:
    """Train a small booster on ``df`` and write it as a verified model bundle in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    schema = infer_schema(df, target, task)
    X = schema.encode_frame(df)
    y = schema.encode_labels(df[target])
    dtrain = xgboost.DMatrix(
        X, y, feature_names=schema.names, feature_types=schema.feature_types, enable_categorical=True
    )
    objective = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}[
        schema.task
    ]
    params = {"objective": objective, "max_depth": 3, "tree_method": "hist", "seed": 0}
    if schema.task == "multiclass":
        params["num_class"] = len(schema.classes)
    booster = xgboost.train(params, dtrain, num_boost_round=20)
    booster.save_model(str(root / MODEL_FILE))
    (root / SCHEMA_FILE).write_text(json.dumps(schema.to_dict()))
    write_manifest(root)
    return root, schema, booster


def minimal_bundle(root: Path, marker: str = "a") -> Path:
    """A minimal bundle: the registry only needs a schema and checksummed files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / bundle.MODEL_FILE).write_bytes(f"model-{marker}".encode())
    (root / bundle.SCHEMA_FILE).write_text(
        json.dumps(
            {
                "target": "y",
                "task": "binary",
                "classes": ["0", "1"],
                "features": [
                    {"name": "x", "kind": "numeric"},
                    {"name": "c", "kind": "categorical", "categories": ["a", "b"]},
                ],
            }
        )
    )
    (root / bundle.METRICS_FILE).write_text(json.dumps({"auc": 0.9}))
    (root / bundle.DRIFT_DIR).mkdir(exist_ok=True)
    (root / bundle.DRIFT_DIR / "x_ref.npy").write_bytes(b"ref")
    bundle.write_manifest(root)
    return root


def servable_bundle(root: Path, df: pd.DataFrame, target: str) -> Path:
    """``build_bundle`` with a drift detector (scipy backend): a bundle both the predictor and the
    drift transformer serve."""
    from kfloop.steps.baseline import fit_drift_baseline

    out, _, _ = build_bundle(root / "bundle", df, target)
    df.to_parquet(root / "train.parquet")
    fit_drift_baseline(str(out), str(root / "train.parquet"), str(out / "drift"), backend="scipy")
    write_manifest(out)
    return out


def trained_bundle(
    root: Path, df: pd.DataFrame, train_rows: int, params: dict, backend: str = "scipy", target: str = "churn"
) -> Path:
    """A bundle as the pipeline's steps write it: trained (``kfloop.steps.train``, with ``params``) on the
    first ``train_rows`` rows of ``df``, validated on the rest, with the drift baseline fitted on the
    training rows with ``backend``. The splits and the schema stay in ``root``; the bundle is ``root/bundle``."""
    from kfloop.steps.baseline import fit_drift_baseline
    from kfloop.steps.train import train_model

    root.mkdir(parents=True, exist_ok=True)
    train, valid, schema = root / "train.parquet", root / "valid.parquet", root / "schema.json"
    df.iloc[:train_rows].to_parquet(train)
    df.iloc[train_rows:].to_parquet(valid)
    schema.write_text(json.dumps(infer_schema(df, target).to_dict()))
    out = root / "bundle"
    train_model(str(train), str(valid), str(schema), params, str(out))
    fit_drift_baseline(str(out), str(train), str(out / bundle.DRIFT_DIR), backend=backend)
    write_manifest(out)
    return out

"""A model bundle as the registry sees it, for tests that need registered versions but no real model."""

from __future__ import annotations

import json
from pathlib import Path

from kfloop import bundle

SCHEMA = {"target": "churn", "task": "binary", "classes": ["0", "1"],
          "features": [{"name": "tenure", "kind": "numeric"},
                       {"name": "plan", "kind": "categorical", "categories": ["basic", "premium"]}]}


def make_bundle(root: Path, auc: float) -> Path:
    """model.ubj may be any bytes for the registry; metrics as the evaluate step writes them."""
    root.mkdir(parents=True)
    (root / bundle.MODEL_FILE).write_bytes(f"model {auc}".encode())
    (root / bundle.SCHEMA_FILE).write_text(json.dumps(SCHEMA))
    (root / bundle.METRICS_FILE).write_text(json.dumps({
        "task": "binary", "metrics": {"auc": auc, "accuracy": 0.8},
        "gate": {"passed": True, "metric": "auc", "reason": f"auc {auc} >= threshold 0.7"}}))
    bundle.write_manifest(root)
    return root

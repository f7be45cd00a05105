"""Fixtures of the rollout target tests: a registry on the S3 server with three versions of a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfloop.store.bundle import METRICS_FILE, MODEL_FILE, SCHEMA_FILE, write_manifest
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry


@pytest.fixture
def registry(s3_settings, tmp_path) -> Registry:
    """An S3 registry with versions 1, 2 and 3 of ``churn`` in staging."""
    reg = Registry(open_store(s3_settings))
    for n in (1, 2, 3):
        reg.register("churn", _bundle(tmp_path / f"bundle{n}"))
    return reg


def _bundle(root: Path) -> Path:
    """A model bundle with a placeholder booster: the rollout passes only its URI on."""
    root.mkdir(parents=True)
    (root / MODEL_FILE).write_bytes(b"placeholder booster")
    schema = {
        "target": "churn",
        "task": "binary",
        "classes": ["0", "1"],
        "features": [{"name": "tenure", "kind": "numeric"}],
    }
    (root / SCHEMA_FILE).write_text(json.dumps(schema))
    (root / METRICS_FILE).write_text(json.dumps({"auc": 0.8}))
    write_manifest(root)
    return root

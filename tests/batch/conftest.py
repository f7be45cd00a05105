"""A registered churn version with a drift baseline, and input files drawn from the same data."""

from __future__ import annotations

import pytest

from kfloop.monitoring.drift import fit_baseline, save_detector
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from tests.fakes.bundles import build_bundle, churn_frame


def register_churn(settings, root, n: int = 400) -> tuple[str, object]:
    """Train and register a small churn model (with a scipy drift baseline); returns its ref and schema."""
    frame = churn_frame(n)
    path, schema, _ = build_bundle(root, frame, "churned")
    save_detector(fit_baseline(schema, schema.encode_frame(frame), backend="scipy"), path / bundle.DRIFT_DIR)
    bundle.write_manifest(path)
    record = Registry(open_store(settings)).register("churn", path)
    return record.ref, schema


@pytest.fixture
def churn_model(local_settings, tmp_path):
    """``(settings, "churn:1", schema)`` on a fresh local home."""
    ref, schema = register_churn(local_settings, tmp_path / "bundle")
    return local_settings, ref, schema

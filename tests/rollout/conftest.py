"""Fixtures of the rollout tests: a real registry on a LocalStore with two versions of a small model."""

from __future__ import annotations

import pytest

from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.fakes.bundles import build_bundle, churn_frame
from tests.fakes.rollout_target import MODEL


@pytest.fixture
def registry(tmp_path):
    registry = Registry(LocalStore(tmp_path / "home"))
    bundle, _, _ = build_bundle(tmp_path / "bundle", churn_frame(n=60), "churned")
    for _ in range(2):
        registry.register(MODEL, bundle)
    registry.set_stage(MODEL, 1, "production", reason="first")
    return registry

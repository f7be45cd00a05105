"""The deploy component leaves a version the register step held for approval (a failed bias check with
bias_action "approval") where it is: not deployed, not an error."""

from __future__ import annotations

import json

from kfloop.components.deploy import deploy
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from tests.fakes.bundles import make_bundle


def test_a_pending_approval_version_is_not_deployed(local_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("KFLOOP_HOME", str(local_settings.home))
    registry = Registry(open_store(local_settings))
    record = registry.register("churn", make_bundle(tmp_path / "b", 0.8), stage="pending-approval")
    status = json.loads(deploy(record.ref, "local", 10, "", "http://127.0.0.1:9"))
    assert status == {"deployed": False, "reason": "churn:1 is pending approval"}
    assert registry.get("churn", 1).stage == "pending-approval"

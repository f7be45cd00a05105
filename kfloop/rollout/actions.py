"""Rollouts: deploy a registered version as a canary, promote it or roll it back.

The traffic split is done by a target: ``LocalTarget`` (the gateway that ``kfloop serve`` runs
on 127.0.0.1, ``kfloop.serving.local.gateway``) or ``KubernetesTarget`` (KServe InferenceServices in
Serverless mode, where ``canaryTrafficPercent`` is honoured). This module keeps the registry's
stages in step with what the target did:

- deploy with no canary (or 100%), or of a model with nothing serving yet: the version serves
  all traffic and becomes ``production``;
- deploy with a canary percentage: the version takes that share next to the stable one;
- promote: the canary takes all traffic and becomes ``production`` (the previous one ``archived``);
- rollback: all traffic back to stable; the canary version becomes ``rejected``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from kfloop.errors import RegistryError
from kfloop.store.registry import ModelRef, Registry, VersionRecord

log = logging.getLogger(__name__)
DEPLOYABLE_STAGES = ("staging", "production", "archived")


class RolloutTarget(Protocol):
    """Where revisions run. Every method returns the status document (see ``status``)."""

    name: str

    def deploy(self, record: VersionRecord, canary_percent: int | None) -> dict: ...
    def promote(self, model: str) -> dict: ...
    def rollback(self, model: str) -> dict: ...

    def status(self, model: str) -> dict:
        """``{"model", "target", "stable": {"version", "percent"} | None,
        "canary": {"version", "percent"} | None, "ready": bool, ...}``"""
        ...


def check_percent(percent: int | None) -> int | None:
    if percent is not None and not 0 <= percent <= 100:
        raise RegistryError(f"canary percentage {percent} must be between 0 and 100")
    return percent


def deploy(registry: Registry, target: RolloutTarget, ref: str, canary_percent: int | None = None) -> dict:
    """Serve version ``ref``: all traffic (and production) or a canary share."""
    record = registry.resolve(ModelRef.parse(ref))
    if record.stage not in DEPLOYABLE_STAGES:
        raise RegistryError(f"{record.ref} is {record.stage!r}; only {DEPLOYABLE_STAGES} versions can be deployed")
    check_percent(canary_percent)
    has_stable = bool(target.status(record.name).get("stable"))
    if canary_percent is not None and not has_stable:
        log.info("%s has nothing serving yet: %s takes all traffic", record.name, record.ref)
    status = target.deploy(record, canary_percent if has_stable else None)
    if canary_percent is None or canary_percent == 100 or not has_stable:
        registry.set_stage(record.name, record.version, "production", reason=f"deployed to {target.name}")
    return status


def promote(registry: Registry, target: RolloutTarget, model: str, reason: str = "promoted") -> dict:
    """The canary takes all traffic and becomes production."""
    canary = _canary(target, model)
    status = target.promote(model)
    registry.set_stage(model, canary, "production", reason=reason)
    return status


def rollback(registry: Registry, target: RolloutTarget, model: str, reason: str = "rolled back") -> dict:
    """All traffic back to the stable revision; the canary version is rejected."""
    canary = _canary(target, model)
    status = target.rollback(model)
    registry.set_stage(model, canary, "rejected", reason=reason)
    return status


def _canary(target: RolloutTarget, model: str) -> int:
    canary = (target.status(model).get("canary") or {}).get("version")
    if canary is None:
        raise RegistryError(f"{model} has no canary on {target.name} to promote or roll back")
    return int(canary)

"""Automatic rollouts: each version a retraining run registers goes through a canary analysis.

The trigger service (``kfloop.serving.trigger.service --auto_rollout STRATEGY``) calls ``start(ref)`` when a
run finished with a registered version. The version is claimed in a record on the object store,
``trigger/<model>/rollouts/<version>.json`` (created once, with ``put_if_absent``: a second
``start`` of the same version, also after a restart, changes nothing), and a background thread per
model runs the model's claimed versions one after the other through
``kfloop.rollout.controller.run_analysis``; its decisions go to the event log and the trigger's
outbox. The record follows the analysis: ``queued``, ``running``, then the outcome (``promoted``,
``rolled-back``, ``aborted``) or ``failed`` with the error. A trigger stopped mid-analysis leaves
the record ``running``; ``resume`` (at start-up) runs it again from its first step with the same
analysis id (the canary keeps running meanwhile), unless the registry shows it was decided already.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable

from kfloop.errors import KfloopError, ObjectNotFound, RegistryError
from kfloop.names import auto_rollout_key, auto_rollouts_prefix
from kfloop.rollout.analysis import AnalysisPlan, Thresholds
from kfloop.rollout.controller import run_analysis
from kfloop.store.objects import ObjectStore, get_json, put_json, seal_json
from kfloop.store.registry import ModelRef, Registry

log = logging.getLogger(__name__)
PENDING = ("queued", "running")
DECIDED_STAGES = {"production": "promoted", "rejected": "rolled-back"}


class _Stopped(Exception):
    """The service is stopping: the analysis ends here and is resumed by the next start."""


class AutoRollout:
    """Canary analyses of newly registered versions, one at a time per model, in background threads.

    ``make_target()`` and ``make_source(target, model)`` build the rollout target and stats source
    for a run (``kfloop.rollout.factory``);
    ``sink`` (the trigger's outbox) receives the decisions as CloudEvents."""

    def __init__(
        self,
        store: ObjectStore,
        plan: AnalysisPlan,
        thresholds: Thresholds,
        make_target: Callable,
        make_source: Callable,
        sink=None,
        event_source: str = "kfloop/trigger/rollout",
    ):
        self.store, self.registry, self.plan, self.thresholds = store, Registry(store), plan, thresholds
        self.make_target, self.make_source, self.sink, self.event_source = make_target, make_source, sink, event_source
        self._threads: dict[str, threading.Thread] = {}
        self.outcomes: collections.Counter[str] = collections.Counter()  # finished analyses since start, by outcome
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self, ref: str) -> bool:
        """Claim ``ref`` (``NAME:VERSION``) for an analysis and make sure its model's worker runs;
        False when it was claimed before."""
        parsed = ModelRef.parse(ref)
        if parsed.version is None:
            raise RegistryError(f"an automatic rollout needs NAME:VERSION, got {ref!r}")
        record = {
            "ref": ref,
            "model": parsed.name,
            "version": parsed.version,
            "status": "queued",
            "strategy": self.plan.strategy,
            "analysis_id": f"{parsed.name}-v{parsed.version}-{uuid.uuid4().hex[:8]}",
            "claimed": time.time(),
        }
        if not self.store.put_if_absent(_key(parsed.name, parsed.version), seal_json(record)):
            log.info("a rollout of %s was started before; not again", ref)
            return False
        log.info("%s registered: %s rollout queued", ref, self.plan.strategy)
        self._ensure_worker(parsed.name)
        return True

    def resume(self) -> list[str]:
        """Start the workers of models with queued or interrupted analyses; returns those models."""
        models = sorted({r["model"] for r in self._all_records() if r["status"] in PENDING})
        for model in models:
            self._ensure_worker(model)
        return models

    def status(self, model: str) -> list[dict]:
        return self._all_records(model)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)

    # -- the worker ----------------------------------------------------------------------------

    def _ensure_worker(self, model: str) -> None:
        with self._lock:
            thread = self._threads.get(model)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._work, args=(model,), name=f"rollout-{model}", daemon=True)
                self._threads[model] = thread
                thread.start()

    def _work(self, model: str) -> None:
        while not self._stopping.is_set():
            pending = [r for r in self._all_records(model) if r["status"] in PENDING]
            if not pending:
                with self._lock:  # a start() racing with this exit sees the thread alive and relies on it
                    if not any(r["status"] in PENDING for r in self._all_records(model)):
                        self._threads.pop(model, None)
                        return
                continue
            self._run(min(pending, key=lambda r: r["version"]))

    def _run(self, record: dict) -> None:
        try:
            stage = self.registry.get(record["model"], record["version"]).stage
            if record["status"] == "running" and stage in DECIDED_STAGES:
                self._update(record, DECIDED_STAGES[stage], f"decided before a restart (the version is {stage})")
                return
            self._update(record, "running", "")
            target = self.make_target()
            result = run_analysis(
                self.registry,
                target,
                self.make_source(target, record["model"]),
                record["model"],
                record["ref"],
                self.plan,
                self.thresholds,
                self.store,
                self.sink,
                sleep=self._sleep,
                event_source=self.event_source,
                progress=lambda line: log.info("%s: %s", record["ref"], line.strip()),
                analysis_id=record["analysis_id"],
            )
        except _Stopped:
            log.info("rollout of %s interrupted by shutdown; resumed at the next start", record["ref"])
            return
        except Exception as e:  # noqa: BLE001 - recorded, never retried in a loop
            (log.error if isinstance(e, KfloopError) else log.exception)("rollout of %s failed: %s", record["ref"], e)
            self._update(record, "failed", f"{type(e).__name__}: {e}")
            return
        self._update(record, result["outcome"], result["reason"])

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopped()

    # -- records -------------------------------------------------------------------------------

    def _update(self, record: dict, status: str, reason: str) -> None:
        record.update(status=status, reason=reason, updated=time.time())
        put_json(self.store, _key(record["model"], record["version"]), record)
        if status not in PENDING:
            self.outcomes[status] += 1

    def _all_records(self, model: str | None = None) -> list[dict]:
        prefix = auto_rollouts_prefix(model)
        records = []
        for key in self.store.list(prefix):
            if "/rollouts/" in key and key.endswith(".json"):
                try:
                    records.append(get_json(self.store, key))
                except ObjectNotFound:
                    continue
        return sorted(records, key=lambda r: (r["model"], r["version"]))


def _key(model: str, version: int) -> str:
    return auto_rollout_key(model, version)

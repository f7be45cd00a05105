"""The canary analysis controller: a candidate version through a plan's steps to promotion or rollback.

``run_analysis`` deploys the candidate as a canary at the first step's share (``kfloop.rollout.actions``,
so registry stages stay in step with the target), holds each step (``AnalysisPlan``), compares the
canary's traffic with the stable revision's over the step (``compare`` on a stats source's data),
and then moves on, or rolls back at the first failed check without waiting for the step's end.
After the last step below 100% the canary is promoted: it becomes ``production`` and the previous
version ``archived``; a rollback sends all traffic back to stable and the candidate is ``rejected``.

On the local gateway a step re-deploys the same canary version with the new percentage (the
running revision keeps running); on Kubernetes the same call patches ``canaryTrafficPercent``.
``blue-green`` bakes the candidate at 0% while the requests are mirrored to it (shadow traffic: the
gateway does it locally; on Kubernetes, where KServe has none, the model's transformer mirrors to the
candidate's own predictor-only InferenceService, ``kfloop.rollout.mirror``), compares its recorded
answers with the stable revision, then switches all traffic at once and removes the shadow.
``all-at-once`` first measures the stable revision, switches all traffic to the candidate, compares
its first requests with that baseline and, on failure, deploys the previous version again.

Every decision (a step passed, promoted, rolled back, aborted) is an ``io.kfloop.rollout.decision``
CloudEvent (data: ``canary_version``, ``stable_version``, ``step``, ``percent``, ``verdict``,
``reason``, ``metrics`` = the checks) kept in the event log, appended to ``sink`` (an ``Outbox``)
when given, and a line of evidence in the candidate's registry stage history. An error on the
way (target or source unreachable five polls in a row, the canary changed by someone else) stops
the analysis and leaves the traffic as it was: roll back by hand, or analyse the same version
again (an analysis picks up an existing canary of its own version).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from kfloop.errors import ConfigError, KfloopError, RegistryError
from kfloop.events.cloudevents import make_event
from kfloop.names import ROLLOUT_DECISION
from kfloop.rollout import actions as rollout
from kfloop.rollout.analysis import AnalysisPlan, RevisionStats, Thresholds, Verdict, compare, summarize
from kfloop.rollout.sources import Side
from kfloop.store.event_log import record_event
from kfloop.store.objects import ObjectStore
from kfloop.store.registry import Registry

log = logging.getLogger(__name__)
MAX_SOURCE_FAILURES = 5
PROGRESS_EVERY = 5.0


def run_analysis(
    registry: Registry,
    target,
    source,
    model: str,
    canary_ref: str,
    plan: AnalysisPlan,
    thresholds: Thresholds,
    store: ObjectStore,
    sink=None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] | None = None,
    event_source: str = "kfloop/rollout",
    analysis_id: str | None = None,
) -> dict:
    """Analyse ``canary_ref`` against the stable revision of ``model`` on ``target`` through ``plan``;
    returns ``{"outcome": "promoted"|"rolled-back"|"aborted", "reason", "decisions", ...}``."""
    return _Analysis(
        registry,
        target,
        source,
        model,
        canary_ref,
        plan,
        thresholds,
        store,
        sink,
        clock,
        sleep,
        progress or (lambda line: None),
        event_source,
        analysis_id,
    ).run()


class _Analysis:
    def __init__(
        self,
        registry,
        target,
        source,
        model,
        canary_ref,
        plan,
        thresholds,
        store,
        sink,
        clock,
        sleep,
        progress,
        event_source,
        analysis_id,
    ):
        self.registry, self.target, self.source, self.store, self.sink = registry, target, source, store, sink
        self.plan, self.thresholds, self.clock, self.sleep, self.say = plan, thresholds, clock, sleep, progress
        self.record = registry.resolve(canary_ref)
        if self.record.name != model:
            raise ConfigError(f"{canary_ref} is not a version of {model}")
        self.model, self.version, self.event_source = model, self.record.version, event_source
        self.id = analysis_id or f"{model}-v{self.version}-{uuid.uuid4().hex[:8]}"
        self.stable = self._stable_version(target.status(model))
        self.decisions: list[dict] = []

    def _stable_version(self, status: dict) -> int:
        stable, canary = status.get("stable") or {}, status.get("canary") or {}
        if stable.get("version") is None:
            raise RegistryError(
                f"{self.model} has nothing serving on {self.target.name} to compare "
                f"{self.record.ref} with; deploy a first version with `kfloop rollout deploy`"
            )
        if int(stable["version"]) == self.version:
            raise RegistryError(f"{self.record.ref} is already the stable revision on {self.target.name}")
        if canary.get("version") is not None and int(canary["version"]) != self.version:
            raise RegistryError(
                f"{self.model} already has a canary (version {canary['version']}) on "
                f"{self.target.name}; promote or roll it back first"
            )
        return int(stable["version"])

    # -- the plan ------------------------------------------------------------------------------

    def run(self) -> dict:
        self.say(
            f"analysis {self.id}: {self.record.ref} against stable version {self.stable}, "
            f"{self.plan.strategy} steps {list(self.plan.steps)}"
        )
        steps = [p for p in self.plan.steps if p < 100]
        if not steps:  # all-at-once (or a canary plan of just 100%)
            return self._all_at_once()
        for index, percent in enumerate(steps, 1):
            self._set_share(percent, first=index == 1)
            if index == 1:
                self.sleep(self.plan.warmup_seconds)
            verdict, stats = self._hold(*self._sides())
            if not verdict.passed:
                return self._rollback(index, percent, verdict, stats)
            self._decide("passed", index, percent, verdict, stats)
            self._note_stage(f"step {index}/{len(self.plan.steps)} at {percent}% passed")
        return self._promote(len(self.plan.steps), verdict, stats)

    def _set_share(self, percent: int, first: bool) -> None:
        if not first:
            canary = (self.target.status(self.model).get("canary") or {}).get("version")
            if canary is None or int(canary) != self.version:
                raise RegistryError(
                    f"the canary of {self.model} changed outside analysis {self.id} (now {canary}); stopped"
                )
        rollout.deploy(self.registry, self.target, self.record.ref, percent)
        if self.plan.shadow and hasattr(self.target, "shadow"):
            self.target.shadow(self.model, self.version, self.plan.shadow_percent, record=self.record)
        self.say(f"  {self.record.ref} at {percent}%" + (" with shadow traffic" if self.plan.shadow else ""))

    def _sides(self) -> tuple[Side, Side]:
        names = {r.get("version"): r.get("revision") for r in self.target.status(self.model).get("revisions") or []}
        shadow = self.plan.shadow and hasattr(self.target, "shadow")
        return Side(self.stable, names.get(self.stable)), Side(self.version, names.get(self.version), shadow)

    def _promote(self, step: int, verdict: Verdict, stats) -> dict:
        if self.plan.shadow and hasattr(self.target, "shadow"):
            self.target.shadow(self.model, None, 0)
        reason = self._reason("promoted", step, 100, verdict)
        rollout.promote(self.registry, self.target, self.model, reason=reason)
        return self._finish("promoted", step, 100, verdict, stats)

    def _rollback(self, step: int, percent: int, verdict: Verdict, stats) -> dict:
        if self.plan.shadow and hasattr(self.target, "shadow"):
            self.target.shadow(self.model, None, 0)
        rollout.rollback(
            self.registry, self.target, self.model, reason=self._reason("rolled-back", step, percent, verdict)
        )
        return self._finish("rolled-back", step, percent, verdict, stats)

    def _all_at_once(self) -> dict:
        stable_side, _ = self._sides()
        baseline = self._baseline(stable_side)
        if baseline.requests < self.thresholds.min_requests:
            verdict = compare(baseline, RevisionStats(self.version), self.thresholds)
            return self._finish(
                "aborted",
                1,
                0,
                verdict,
                (baseline, RevisionStats(self.version)),
                note="the stable revision had not enough traffic to measure before the switch",
            )
        rollout.deploy(self.registry, self.target, self.record.ref)
        self.say(f"  {self.record.ref} takes all traffic; baking against the stable baseline")
        self.sleep(self.plan.warmup_seconds)
        _, candidate = self._sides()
        verdict, stats = self._hold(None, candidate, baseline=baseline)
        reason = self._reason("promoted" if verdict.passed else "rolled-back", 1, 100, verdict)
        if verdict.passed:
            self.registry.set_stage(self.model, self.version, "production", reason=reason)
            return self._finish("promoted", 1, 100, verdict, stats)
        rollout.deploy(self.registry, self.target, f"{self.model}:{self.stable}")
        self.registry.set_stage(self.model, self.version, "rejected", reason=reason)
        return self._finish("rolled-back", 1, 100, verdict, stats)

    # -- holding a step ------------------------------------------------------------------------

    def _hold(self, stable: Side | None, canary: Side, baseline: RevisionStats | None = None):
        """Wait for the step's verdict: held long enough with enough traffic (and captured
        predictions, up to ``data_wait_seconds``), a failed check, or the timeout."""
        mark, start, held_at, last_note = self.source.begin(self.model), self.clock(), None, self.clock()
        while True:
            self.sleep(self.plan.poll_seconds)
            stats = self._collect(stable, canary, mark, baseline)
            verdict, elapsed = compare(*stats, self.thresholds), self.clock() - start
            if verdict.failed:
                return verdict, stats
            if held_at is None and self.plan.held(stats[1].requests, elapsed):
                held_at = elapsed
            if (
                held_at is not None
                and not verdict.insufficient
                and (not verdict.waiting_for_predictions or elapsed - held_at >= self.plan.data_wait_seconds)
            ):
                return verdict, stats
            if elapsed >= self.plan.timeout_seconds:
                return verdict, stats
            if self.clock() - last_note >= PROGRESS_EVERY:
                last_note = self.clock()
                self.say(f"    {elapsed:.0f}s: canary {stats[1].requests} requests, stable {stats[0].requests}")

    def _baseline(self, stable: Side) -> RevisionStats:
        """The stable revision's traffic over one hold, before an all-at-once switch."""
        mark, start, held_at = self.source.begin(self.model), self.clock(), None
        while True:
            self.sleep(self.plan.poll_seconds)
            stats, elapsed = self._collect(stable, None, mark)[0], self.clock() - start
            if (
                held_at is None
                and self.plan.held(stats.requests, elapsed)
                and stats.requests >= self.thresholds.min_requests
            ):
                held_at = elapsed
            enough_predictions = len(stats.predictions) >= self.thresholds.min_predictions
            if (
                held_at is not None and (enough_predictions or elapsed - held_at >= self.plan.data_wait_seconds)
            ) or elapsed >= self.plan.timeout_seconds:
                return stats

    def _collect(self, stable, canary, mark, baseline=None, failures: int = 0):
        while True:
            try:
                stats = self.source.collect(self.model, stable, canary, mark)
                return (baseline, stats[1]) if baseline is not None else stats
            except KfloopError as e:
                failures += 1
                if failures >= MAX_SOURCE_FAILURES:
                    raise
                log.warning("analysis %s: reading the %s source failed (%s); retrying", self.id, self.source.name, e)
                self.sleep(self.plan.poll_seconds)

    # -- decisions -----------------------------------------------------------------------------

    def _reason(self, verdict_name: str, step: int, percent: int, verdict: Verdict) -> str:
        return (
            f"canary analysis {self.id} ({self.plan.strategy}) step {step}/{len(self.plan.steps)} at "
            f"{percent}%: {verdict_name}: {verdict.reason}. Evidence: {summarize(verdict)}"
        )

    def _note_stage(self, what: str) -> None:
        """A passed step, in the candidate's stage history (its stage does not change)."""
        current = self.registry.get(self.model, self.version).stage
        self.registry.set_stage(
            self.model,
            self.version,
            current,
            reason=f"canary analysis {self.id}: {what}; {self.decisions[-1]['evidence']}",
        )

    def _decide(self, verdict_name: str, step: int, percent: int, verdict: Verdict, stats, note: str = "") -> dict:
        data = {
            "model": self.model,
            "analysis_id": self.id,
            "strategy": self.plan.strategy,
            "canary_version": self.version,
            "stable_version": self.stable,
            "step": step,
            "steps": len(self.plan.steps),
            "percent": percent,
            "verdict": verdict_name,
            "reason": f"{note}: {verdict.reason}" if note else verdict.reason,
            "metrics": verdict.checks,
            "evidence": summarize(verdict),
            "stats": {"stable": stats[0].summary(), "canary": stats[1].summary()},
            "plan": self.plan.to_dict(),
            "thresholds": self.thresholds.to_dict(),
        }
        event = make_event(
            ROLLOUT_DECISION, self.event_source, data, subject=self.model, id=f"{self.id}.{step}.{verdict_name}"
        )
        record_event(self.store, self.model, event)
        if self.sink is not None:
            self.sink.append(event)
        self.decisions.append(data)
        self.say(f"  step {step}/{len(self.plan.steps)} at {percent}%: {verdict_name}: {data['reason']}")
        return data

    def _finish(self, outcome: str, step: int, percent: int, verdict: Verdict, stats, note: str = "") -> dict:
        data = self._decide(outcome, step, percent, verdict, stats, note)
        return {
            "model": self.model,
            "analysis_id": self.id,
            "strategy": self.plan.strategy,
            "canary_version": self.version,
            "stable_version": self.stable,
            "outcome": outcome,
            "reason": data["reason"],
            "decisions": self.decisions,
        }

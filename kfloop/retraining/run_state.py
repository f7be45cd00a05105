"""A model's retraining run in flight: from the decision to start it until it finishes.

A run is ``launching`` (its training data is built and the runner asked to start it; a failed
attempt is retried at ``next_attempt``), then ``running`` (the runner started it as ``run_id``; the
trigger polls it), then ``finished`` (``finish`` returns its result, which goes to the model's
history while the record leaves the stored state). Each move is one method, and a move the run
cannot make raises ``InvalidTransition``: a run is launched once, polled only while running and
finished once.

The record is kept inside the model's trigger state (``kfloop.retraining.policy.TriggerState``) on
the object store. ``to_dict``/``from_dict`` keep its stored keys: ``name``, ``run_id``,
``event_id``, ``event_type``, ``reason``, ``started``, ``started_iso``, ``target``, ``strategy``,
``status``, ``attempts`` and ``next_attempt`` always; ``data``, ``arguments``, ``last_error`` and
``poll_failures`` once they are known, and ``evidence`` (what the policy's decision rested on:
``kfloop.retraining.policy.Decision.evidence``) when the decision had any.
"""

from __future__ import annotations

import dataclasses
import enum

from kfloop.errors import DataError, KfloopError
from kfloop.timestamps import rfc3339

OUTCOMES = ("succeeded", "failed")  # how a run ends (``kfloop.retraining.runners.RunStatus.state``)
_OPTIONAL = ("data", "arguments", "last_error", "poll_failures", "evidence")  # stored once known


class RunPhase(str, enum.Enum):
    """Where a run in flight is; stored as its value under ``status`` (``finished`` never is)."""

    LAUNCHING = "launching"
    RUNNING = "running"
    FINISHED = "finished"


class InvalidTransition(KfloopError):
    """A run was asked to make a move its phase does not allow (a bug, or two workers on one run)."""


@dataclasses.dataclass
class RunInFlight:
    """One retraining run started by ``event_id`` for ``reason``, on ``target`` with data ``strategy``."""

    name: str
    event_id: str
    event_type: str
    reason: str
    started: float  # epoch seconds
    started_iso: str
    target: str
    strategy: str
    status: RunPhase = RunPhase.LAUNCHING
    run_id: str | None = None
    attempts: int = 0  # failed launch attempts
    next_attempt: float = 0.0  # epoch seconds of the next launch attempt
    data: dict | None = None  # the training data (``kfloop.retraining.inputs.training_data``)
    arguments: dict | None = None  # the pipeline arguments of the last launch attempt
    last_error: str | None = None  # why the last launch attempt failed
    poll_failures: int | None = None  # polls failed in a row; None until one first fails
    evidence: dict | None = None  # the signal, value, threshold, streak and rule the decision rested on

    @classmethod
    def start(
        cls, name: str, event: dict, reason: str, now: float, target: str, strategy: str, evidence: dict | None = None
    ) -> RunInFlight:
        """A run that ``event`` started at ``now``, to be launched at once."""
        return cls(
            name,
            event["id"],
            event["type"],
            reason,
            now,
            rfc3339(now),
            target,
            strategy,
            next_attempt=now,
            evidence=evidence or None,
        )

    # -- moves ---------------------------------------------------------------------------------

    def prepare(self, data: dict, arguments: dict) -> None:
        """The training data and pipeline arguments of the next launch attempt."""
        self._require("be prepared", RunPhase.LAUNCHING)
        self.data, self.arguments = data, arguments

    def launch_failed(self, error: str, next_attempt: float) -> None:
        """A launch attempt failed with ``error``; the next one is at ``next_attempt``."""
        self._require("fail to launch", RunPhase.LAUNCHING)
        self.attempts += 1
        self.last_error, self.next_attempt = error, next_attempt

    def launched(self, run_id: str) -> None:
        """The runner started the run as ``run_id``."""
        self._require("be launched", RunPhase.LAUNCHING)
        if not run_id:
            raise InvalidTransition(f"run {self.name} cannot be launched without a run id, got {run_id!r}")
        self.run_id, self.status = run_id, RunPhase.RUNNING

    def poll_failed(self) -> int:
        """Reading the run's state failed; returns the failures in a row."""
        self._require("fail a poll", RunPhase.RUNNING)
        self.poll_failures = (self.poll_failures or 0) + 1
        return self.poll_failures

    def poll_answered(self) -> bool:
        """The run's state was read (it still runs); True when that reset earlier poll failures."""
        self._require("be polled", RunPhase.RUNNING)
        if not self.poll_failures:
            return False
        self.poll_failures = 0
        return True

    def finish(self, model: str, outcome: str, registered: str | None, reason: str, now: float) -> dict:
        """The run ended (``succeeded`` or ``failed``) at ``now``; returns its result: the data of
        ``io.kfloop.retrain.finished`` and the model's history entry."""
        self._require("finish", RunPhase.LAUNCHING, RunPhase.RUNNING)
        if outcome not in OUTCOMES:
            raise InvalidTransition(f"run {self.name} cannot end {outcome!r}: expected one of {OUTCOMES}")
        self.status = RunPhase.FINISHED
        return {
            **self.summary(model),
            "status": outcome,
            "registered": registered,
            "reason": reason,
            "finished_iso": rfc3339(now),
            "seconds": round(now - self.started, 3),
        }

    def _require(self, move: str, *phases: RunPhase) -> None:
        if self.status not in phases:
            allowed = " or ".join(p.value for p in phases)
            raise InvalidTransition(f"run {self.name} is {self.status.value}: only a {allowed} run can {move}")

    # -- what it reports -----------------------------------------------------------------------

    @property
    def started_event_id(self) -> str:
        return f"{self.name}.started"

    @property
    def finished_event_id(self) -> str:
        return f"{self.name}.finished"

    def summary(self, model: str) -> dict:
        """What every event about the run says."""
        return {
            "model": model,
            "run_id": self.run_id,
            "run_name": self.name,
            "event_id": self.event_id,
            "target": self.target,
            "strategy": self.strategy,
        }

    def started_data(self, model: str) -> dict:
        """The data of ``io.kfloop.retrain.started``."""
        self._require("report its start", RunPhase.RUNNING)
        return {
            **self.summary(model),
            "source": self.data["source"],
            "rows": self.data.get("rows"),
            "arguments": self.arguments,
            "reason": self.reason,
            **({"evidence": self.evidence} if self.evidence else {}),
        }

    # -- stored form ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The stored record (a finished run is not stored: its result is in the history)."""
        if self.status is RunPhase.FINISHED:
            raise InvalidTransition(f"run {self.name} is finished: it is no longer stored in flight")
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["status"] = self.status.value
        return {k: v for k, v in doc.items() if not (k in _OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls, doc: dict) -> RunInFlight:
        """A stored record; DataError when it is not one."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING] + ["status", "attempts"]
        missing = [n for n in required if n not in doc]
        if missing:
            raise DataError(f"stored run in flight {doc.get('name')!r} lacks {missing}")
        try:
            status = RunPhase(doc["status"])
        except ValueError:
            status = None
        if status not in (RunPhase.LAUNCHING, RunPhase.RUNNING):
            raise DataError(
                f"stored run in flight {doc['name']!r} has status {doc['status']!r}: expected launching or running"
            )
        if status is RunPhase.RUNNING and not doc.get("run_id"):
            raise DataError(f"stored run in flight {doc['name']!r} is running without a run id")
        return cls(**{**{k: v for k, v in doc.items() if k in fields}, "status": status})

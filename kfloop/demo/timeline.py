"""The demo's timeline: what happened and when, printed as it happens and kept for later.

Each entry has the seconds since the demo started, the wall-clock time (RFC 3339), a ``kind``
(a stable key such as ``drift_onset``, ``drift_detected``, ``run_started``, ``canary``,
``promoted``, ``rolled_back``; ``KINDS`` lists them) and a line of text for people. An entry
may be dated in the past (``at``): a drift event is entered when the demo sees it in the event
log, but dated by the event's own ``time``. ``save`` writes the entries as JSON
(``<KFLOOP_HOME>/demo/timeline.json``); ``benchmarks/loop.py`` reads the same entries.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from kfloop.timestamps import epoch_seconds, rfc3339

KINDS = (
    "start",
    "v1_registered",
    "serving",
    "traffic",
    "drift_onset",
    "concept_drift",
    "false_alarm",
    "drift_detected",
    "run_started",
    "quality_degraded",
    "run_finished",
    "registered",
    "canary_serving",
    "canary_share",
    "canary_step",
    "canary_passed",
    "promoted",
    "note",
    "bad_registered",
    "rolled_back",
    "report",
    "stopped",
    "failed",
)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One thing that happened: ``seconds`` after the start, at wall time ``time``."""

    seconds: float
    time: str
    kind: str
    text: str
    data: dict = dataclasses.field(default_factory=dict)

    @property
    def epoch(self) -> float:
        return epoch_seconds(self.time)


class Timeline:
    """Entries in the order they were observed; ``add`` prints each one through ``out``."""

    def __init__(
        self, out: Callable[[str], None] = print, clock: Callable[[], float] = time.time, started: float | None = None
    ):
        self.out, self.clock = out, clock
        self.started = clock() if started is None else started
        self.entries: list[Entry] = []

    def add(self, kind: str, text: str, at: float | None = None, **data) -> Entry:
        """Record (and print) that ``text`` happened at ``at`` (seconds since the epoch, default now)."""
        when = self.clock() if at is None else at
        entry = Entry(round(when - self.started, 3), rfc3339(when), kind, text, data)
        self.entries.append(entry)
        self.out(f"{entry.seconds:7.1f}s  {text}")
        return entry

    def detail(self, text: str) -> None:
        """A progress line under the current step (printed, not recorded)."""
        self.out(f"{'':9}{text}")

    def elapsed(self) -> float:
        return self.clock() - self.started

    def first(self, kind: str) -> Entry | None:
        return next((e for e in self.entries if e.kind == kind), None)

    def all(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    def to_dict(self) -> dict:
        return {"started": rfc3339(self.started), "entries": [dataclasses.asdict(e) for e in self.entries]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Timeline:
        doc = json.loads(Path(path).read_text())
        timeline = cls(out=lambda line: None, started=epoch_seconds(doc["started"]))
        timeline.entries = [Entry(**e) for e in doc["entries"]]
        return timeline

"""What every monitoring check answers: one ``SignalResult`` per signal and window.

A *signal* is one way a served model can go wrong, checked over a *window* of served rows (or labeled
rows, for the quality signals): feature drift, data quality, prediction drift, multivariate drift,
attribution drift, bias drift, realized quality (with labels) and estimated quality (without). Each
check returns a ``SignalResult`` whose ``status`` is:

- ``ok``: the check ran and found nothing;
- ``alert``: the check ran and its statistic crossed its threshold;
- ``insufficient``: the window had too few rows (or labels, or rows of a group) for the test to mean
  anything; ``reason`` says what was missing. This is not a verdict and the policy never acts on it.

A signal that cannot be computed at all for a model (no labels yet, no sensitive feature, no
calibrator in an old bundle) gives no result: it is absent from events and reports, never zero.

The CloudEvent type of an alerting signal is ``SIGNAL_EVENT_TYPES[signal]`` (``kfloop.names``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from kfloop.errors import InvalidRequest
from kfloop.names import SIGNAL_EVENT_TYPES, SIGNALS

STATUSES = ("ok", "alert", "insufficient")


@dataclasses.dataclass(frozen=True)
class SignalResult:
    """One signal's answer for one window.

    ``value`` is the signal's headline statistic (a p-value, an AUC, an NDCG, an estimated accuracy, a
    violation count...), ``threshold`` what it is compared with, and ``direction`` which side of the
    threshold alerts (``"above"`` or ``"below"``). ``evidence`` holds the details a person needs to act
    (the features that moved, the violated constraints, the classifier's top features), as plain JSON.
    """

    signal: str
    status: str
    value: float | None = None
    threshold: float | None = None
    direction: str = "below"
    rows: int = 0
    reason: str = ""
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.signal not in SIGNALS:
            raise InvalidRequest(f"unknown signal {self.signal!r}: expected one of {SIGNALS}")
        if self.status not in STATUSES:
            raise InvalidRequest(f"unknown signal status {self.status!r}: expected one of {STATUSES}")
        if self.direction not in ("above", "below"):
            raise InvalidRequest(f"direction {self.direction!r}: expected 'above' or 'below'")
        if self.status == "insufficient" and not self.reason:
            raise InvalidRequest(f"an insufficient {self.signal} result must say why (reason)")
        for name in ("value", "threshold"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(number):
                raise InvalidRequest(f"{self.signal} {name} is {number!r}: expected a finite number or None")

    @property
    def alerting(self) -> bool:
        return self.status == "alert"

    @property
    def event_type(self) -> str:
        return SIGNAL_EVENT_TYPES[self.signal]

    def to_dict(self) -> dict[str, Any]:
        """The fields, the evidence copied (``dataclasses.asdict``'s result; its generic deep copy cost
        ~0.5 ms of each window's checks)."""
        return {f: _copied(getattr(self, f)) for f in _FIELD_NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignalResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise InvalidRequest(f"signal result has unknown fields {sorted(unknown)}")
        return cls(**data)


def crossed(value: float, threshold: float, direction: str) -> bool:
    """Whether ``value`` is on the alerting side of ``threshold`` (strictly)."""
    return value > threshold if direction == "above" else value < threshold


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(SignalResult))
_ATOMS = frozenset({str, int, float, bool, type(None)})


def _copied(value: Any) -> Any:
    """``value`` copied as ``dataclasses.asdict`` copies a field: containers rebuilt, atoms as they are."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        return {_copied(k): _copied(v) for k, v in value.items()}
    if kind is list:
        return [_copied(v) for v in value]
    if kind is tuple:
        return tuple(_copied(v) for v in value)
    return copy.deepcopy(value)

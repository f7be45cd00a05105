"""Canary analysis, the pure part: rollout plans, thresholds, and the verdict on one step's traffic.

Like an Argo Rollouts analysis or SageMaker's deployment guardrails, a candidate version takes a
growing share of the traffic in steps; at each step its requests are compared with the stable
revision's over the same window, and the step passes or the candidate is rolled back.

Plans (``plan_for``): ``canary`` (the given percentages, default 10, 50, 100), ``linear`` (``n``
equal steps, 4 -> 25, 50, 75, 100), ``all-at-once`` (100: the candidate takes all traffic, then
its first requests are compared with the stable revision's last ones) and ``blue-green`` (0 with
shadow traffic: the candidate gets a mirrored copy of the requests while the stable answers them,
then 100). A step of 100 is the promotion; every step below it is analysed.

``compare`` checks, each reported as ``{"metric", "stable", "canary", "threshold", "passed"}``
(the shape the report reads; ``passed`` is None and ``skipped`` True when the data is missing):

- ``requests``: both sides served at least ``min_requests`` (else the verdict waits: not enough traffic);
- ``error_rate``: the canary's share of 5xx/failed requests exceeds the stable one's by at most
  ``max_error_rate_increase`` (absolute, 0.01 = one percentage point);
- ``p99_latency_ms``: the canary's p99 is at most ``max_p99_ratio`` times the stable one's, or
  within ``p99_slack_ms`` of it (ratios of a few milliseconds are noise);
- ``prediction_divergence``: JS distance of class probabilities / KS statistic of values
  (``kfloop.rollout.divergence``) at most ``max_divergence``, with ``min_predictions`` per side;
- ``quality``: on labeled traffic, the primary metric (accuracy, rmse) is worse by at most
  ``max_quality_drop`` relative to the stable one, with ``min_labels`` per side.
"""

from __future__ import annotations

import dataclasses
import math

from kfloop.errors import ConfigError, DataError
from kfloop.names import ROLLOUT_STRATEGIES
from kfloop.rollout.divergence import prediction_divergence
from kfloop.training.evaluate import higher_is_better

DEFAULT_CANARY_STEPS = (10, 50, 100)


@dataclasses.dataclass(frozen=True)
class AnalysisPlan:
    """The steps (canary traffic percentages) and how long each is held.

    A step ends when the canary served ``hold_requests`` requests or ``hold_seconds`` passed,
    whichever comes first; its verdict then needs ``Thresholds.min_requests`` on both sides,
    awaited up to ``timeout_seconds`` from the step's start (then: rolled back, "not enough
    traffic": a candidate nobody could check is not promoted). Captured predictions arrive in
    batches, so the verdict waits up to ``data_wait_seconds`` more for them. A new revision's first
    requests are slow (connections, caches), so the first step starts measuring
    ``warmup_seconds`` after the candidate got its share (Argo's ``initialDelay``)."""

    strategy: str = "canary"
    steps: tuple = DEFAULT_CANARY_STEPS
    hold_requests: int | None = 200
    hold_seconds: float | None = None
    timeout_seconds: float = 600.0
    data_wait_seconds: float = 10.0
    poll_seconds: float = 1.0
    shadow_percent: int = 100
    warmup_seconds: float = 0.0

    def __post_init__(self):
        if self.strategy not in ROLLOUT_STRATEGIES:
            raise ConfigError(f"rollout strategy {self.strategy!r} is not one of {ROLLOUT_STRATEGIES}")
        steps = tuple(self.steps)
        if (
            not steps
            or steps[-1] != 100
            or any(not isinstance(s, int) or not 0 <= s <= 100 for s in steps)
            or any(a >= b for a, b in zip(steps, steps[1:]))
        ):
            raise ConfigError(f"rollout steps {list(steps)}: expected increasing whole percentages ending at 100")
        if self.hold_requests is None and self.hold_seconds is None:
            raise ConfigError("a rollout step needs hold_requests or hold_seconds (or both)")
        for name in ("hold_requests", "hold_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} is {value!r}: expected a positive number")
        if (
            not self.timeout_seconds > 0
            or not self.poll_seconds > 0
            or not self.data_wait_seconds >= 0
            or not self.warmup_seconds >= 0
        ):
            raise ConfigError(
                f"timeout_seconds {self.timeout_seconds}, poll_seconds {self.poll_seconds}, "
                f"data_wait_seconds {self.data_wait_seconds}, warmup_seconds {self.warmup_seconds}: "
                f"expected positive numbers"
            )
        object.__setattr__(self, "steps", steps)

    @property
    def shadow(self) -> bool:
        return self.strategy == "blue-green"

    def held(self, canary_requests: int, elapsed: float) -> bool:
        """Whether a step has been held long enough for its verdict."""
        return (self.hold_requests is not None and canary_requests >= self.hold_requests) or (
            self.hold_seconds is not None and elapsed >= self.hold_seconds
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "steps": list(self.steps)}


def plan_for(strategy: str, steps: list[int] | tuple | None = None, n_steps: int | None = None, **hold) -> AnalysisPlan:
    """The plan of ``strategy``; ``steps`` for canary (100 is appended when missing), ``n_steps``
    for linear (default 4); ``hold`` are the other ``AnalysisPlan`` fields (None: the default;
    ``hold_seconds`` alone holds steps by time only)."""
    if strategy == "canary":
        given = tuple(steps or DEFAULT_CANARY_STEPS)
        steps = given if given and given[-1] == 100 else given + (100,)
    elif strategy == "linear":
        n = n_steps or (len(steps) if steps else 4)
        if not isinstance(n, int) or not 1 <= n <= 100:
            raise ConfigError(f"linear rollout with {n!r} steps: expected 1 to 100")
        steps = tuple(round(100 * i / n) for i in range(1, n + 1))
    elif strategy == "all-at-once":
        steps = (100,)
    elif strategy == "blue-green":
        steps = (0, 100)
    if hold.get("hold_seconds") is not None and hold.get("hold_requests") is None:
        hold["hold_requests"] = None  # held by time only
        return AnalysisPlan(strategy, steps, **{k: v for k, v in hold.items() if v is not None or k == "hold_requests"})
    return AnalysisPlan(strategy, steps, **{k: v for k, v in hold.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a step fails (see the module docstring)."""

    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 10.0
    max_divergence: float = 0.25
    max_quality_drop: float = 0.05
    min_requests: int = 50
    min_predictions: int = 200
    min_labels: int = 30

    ALIASES = {
        "error_rate": "max_error_rate_increase",
        "p99_ratio": "max_p99_ratio",
        "p99_slack": "p99_slack_ms",
        "divergence": "max_divergence",
        "quality_drop": "max_quality_drop",
    }

    @classmethod
    def parse(cls, text: str | None) -> Thresholds:
        """``"error_rate=0.02,p99_ratio=2,divergence=0.3,quality_drop=0.1,min_requests=100"``
        (field names or their short forms); unnamed fields keep their defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict = {}
        for pair in filter(None, (p.strip() for p in (text or "").split(","))):
            key, sep, raw = pair.partition("=")
            name = cls.ALIASES.get(key.strip(), key.strip())
            if not sep or name not in fields:
                raise ConfigError(
                    f"threshold {pair!r}: expected NAME=VALUE with NAME one of {sorted(set(fields) | set(cls.ALIASES))}"
                )
            try:
                values[name] = int(raw) if name.startswith("min_") else float(raw)
            except ValueError:
                raise ConfigError(f"threshold {pair!r}: {raw!r} is not a number") from None
            if not math.isfinite(values[name]) or values[name] < 0:
                raise ConfigError(f"threshold {pair!r}: expected a finite number >= 0")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RevisionStats:
    """What one revision did during a step: requests, failed ones (5xx, no answer), p99 latency,
    per-row predictions, and quality on labeled rows ``{"metric", "value", "n"}`` if any."""

    version: int | None = None
    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    predictions: list = dataclasses.field(default_factory=list)
    quality: dict | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def summary(self) -> dict:
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "p99_ms": self.p99_ms,
            "predictions": len(self.predictions),
            "quality": self.quality,
        }


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A step's outcome: ``passed``, or failed checks, or not enough traffic yet (``insufficient``)."""

    passed: bool
    checks: list
    reason: str
    insufficient: bool = False

    @property
    def failed(self) -> list[str]:
        return [c["metric"] for c in self.checks if c["passed"] is False and c["metric"] != "requests"]

    @property
    def waiting_for_predictions(self) -> bool:
        """The divergence check lacks captured predictions (they lag the requests)."""
        return any(
            c["metric"] == "prediction_divergence" and c.get("skipped") and c.get("pending") for c in self.checks
        )


def compare(stable: RevisionStats, canary: RevisionStats, thresholds: Thresholds = Thresholds()) -> Verdict:
    """The verdict on one step: every check, with the failing ones named in ``reason``."""
    t = thresholds
    need = max(1, t.min_requests)
    enough = stable.requests >= need and canary.requests >= need
    checks = [
        _check("requests", stable.requests, canary.requests, need, enough),
        *_traffic_checks(stable, canary, t, enough),
        _divergence(stable, canary, t),
        _quality(stable, canary, t),
    ]
    failed = [c for c in checks if c["passed"] is False and c["metric"] != "requests"]
    if failed:
        return Verdict(False, checks, "failed: " + "; ".join(_describe(c) for c in failed))
    if not enough:
        return Verdict(
            False,
            checks,
            f"not enough traffic: stable {stable.requests}, canary {canary.requests} requests (at least {need} each)",
            insufficient=True,
        )
    skipped = [f"{c['metric']} ({c['note']})" for c in checks if c.get("skipped")]
    return Verdict(True, checks, "passed" + (f"; skipped: {', '.join(skipped)}" if skipped else ""))


def _traffic_checks(stable: RevisionStats, canary: RevisionStats, t: Thresholds, enough: bool) -> list[dict]:
    if not enough:
        note = f"fewer than {max(1, t.min_requests)} requests"
        return [_skip("error_rate", note), _skip("p99_latency_ms", note)]
    s_rate, c_rate = stable.error_rate, canary.error_rate
    errors = _check(
        "error_rate",
        _round(s_rate),
        _round(c_rate),
        _round(s_rate + t.max_error_rate_increase),
        c_rate <= s_rate + t.max_error_rate_increase,
    )
    if stable.p99_ms is None or canary.p99_ms is None:
        return [errors, _skip("p99_latency_ms", "no latency measured")]
    limit = max(stable.p99_ms * t.max_p99_ratio, stable.p99_ms + t.p99_slack_ms)
    latency = _check(
        "p99_latency_ms", _round(stable.p99_ms), _round(canary.p99_ms), _round(limit), canary.p99_ms <= limit
    )
    return [errors, latency]


def _divergence(stable: RevisionStats, canary: RevisionStats, t: Thresholds) -> dict:
    n_s, n_c = len(stable.predictions), len(canary.predictions)
    if min(n_s, n_c) < t.min_predictions:
        check = _skip(
            "prediction_divergence",
            f"{n_s} stable and {n_c} canary predictions captured (at least {t.min_predictions} each)",
        )
        return {**check, "pending": canary.requests > 0}
    try:
        value, measure = prediction_divergence(stable.predictions, canary.predictions)
    except DataError as e:
        return {**_check("prediction_divergence", None, None, t.max_divergence, False), "note": str(e)}
    check = _check("prediction_divergence", None, _round(value), t.max_divergence, value <= t.max_divergence)
    return {**check, "measure": measure, "n": {"stable": n_s, "canary": n_c}}


def _quality(stable: RevisionStats, canary: RevisionStats, t: Thresholds) -> dict:
    s, c = stable.quality or {}, canary.quality or {}
    n_s, n_c = s.get("n", 0), c.get("n", 0)
    if min(n_s, n_c) < t.min_labels or s.get("value") is None or c.get("value") is None:
        return _skip("quality", f"{n_s} stable and {n_c} canary labeled rows (at least {t.min_labels} each)")
    metric, sv, cv = s["metric"], s["value"], c["value"]
    worse = (sv - cv) if higher_is_better(metric) else (cv - sv)
    drop = worse / abs(sv) if sv else (0.0 if worse <= 0 else math.inf)
    limit = sv * (1 - t.max_quality_drop) if higher_is_better(metric) else sv * (1 + t.max_quality_drop)
    check = _check("quality", _round(sv), _round(cv), _round(limit), drop <= t.max_quality_drop)
    return {**check, "measure": metric, "relative_drop": _round(drop), "n": {"stable": n_s, "canary": n_c}}


def _check(metric: str, stable, canary, threshold, passed: bool) -> dict:
    return {"metric": metric, "stable": stable, "canary": canary, "threshold": threshold, "passed": bool(passed)}


def _skip(metric: str, note: str) -> dict:
    return {
        "metric": metric,
        "stable": None,
        "canary": None,
        "threshold": None,
        "passed": None,
        "skipped": True,
        "note": note,
    }


def _describe(check: dict) -> str:
    if check.get("note"):
        return f"{check['metric']} ({check['note']})"
    return f"{check['metric']} canary {check['canary']} vs stable {check['stable']} (limit {check['threshold']})"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def summarize(verdict: Verdict) -> str:
    """One line of evidence for a registry stage reason: each check's values and outcome."""
    parts = []
    for c in verdict.checks:
        if c.get("skipped"):
            parts.append(f"{c['metric']} skipped ({c['note']})")
        else:
            outcome = "ok" if c["passed"] else "FAILED"
            parts.append(f"{c['metric']} {c['canary']} vs {c['stable']} (limit {c['threshold']}) {outcome}")
    return "; ".join(parts)

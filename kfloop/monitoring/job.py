"""The scheduled monitoring job: every check over the captures of a time range, window by window.

Where the live path checks windows of served rows as they arrive (``kfloop.monitoring.drift_monitor``,
one transformer replica at a time), the job reads what every replica and batch job captured for a
model over ``[since, until)`` (``read_captures``), per model version, with the labels that arrived
for them (``kfloop.monitoring.feedback.labeled_frame``), splits each version's rows into windows and
runs every check of ``CHECKS`` on every window.

**Windows.** A version's rows, in capture-time order, are split into ``len(rows) // window_rows``
windows of nearly equal size (each at least ``window_rows`` rows). A version with fewer rows than
``window_rows`` (a low-traffic model whose live windows never fill) gets one window *pooled* over the
whole range: schedule the job over a longer range (``--since 7d``) to give it enough rows. A window
with fewer than ``min_rows`` rows (or ``min_labels`` labels for the labeled checks) is
``insufficient``: the result says what was missing, never a verdict.

**Checks.** ``CHECKS`` maps each signal (``kfloop.names.SIGNALS``) to a function ``check(window,
inputs, options) -> SignalResult | None``; ``None`` means the signal cannot be computed for this
version (no drift baseline, no labels, a regressor for an accuracy estimate) and it is absent from
the report and the events. Adding a check is one line in ``CHECKS``.

**Events.** An alerting result becomes the CloudEvent the live path emits for it
(``SIGNAL_EVENT_TYPES[signal]``): feature drift as Alibi Detect's envelope (as the transformer sends
it), the other signals as the result's fields (``status``, ``value``, ``threshold``, ``direction``,
``rows``, ``evidence``) with ``model``, ``model_version``, ``window_index``, ``window_size``,
``start`` and ``end``. Event ids are derived from the window's rows, so running the job again over
the same range emits the same ids (the trigger drops them as duplicates).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kfloop.errors import ConfigError, DataError
from kfloop.events.cloudevents import make_event
from kfloop.monitoring.attribution import attribution_drift
from kfloop.monitoring.bias_drift import bias_drift
from kfloop.monitoring.data_quality import check_data_quality
from kfloop.monitoring.drift import DriftDetector, to_jsonable
from kfloop.monitoring.estimation import estimated_quality_signal
from kfloop.monitoring.multivariate import multivariate_drift
from kfloop.monitoring.prediction_drift import check_prediction_drift
from kfloop.monitoring.quality import DEFAULT_METRIC, estimate_accuracy, quality_metrics
from kfloop.monitoring.signals import SignalResult
from kfloop.names import SIGNALS
from kfloop.schema import FeatureSchema
from kfloop.training.evaluate import higher_is_better

DEFAULT_WINDOW_ROWS = 500  # as the transformer's live drift window
DEFAULT_MIN_ROWS = 50
DEFAULT_MIN_LABELS = 30


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """How the job windows the rows, the least a check needs, and which checks run (None: all)."""

    window_rows: int = DEFAULT_WINDOW_ROWS
    min_rows: int = DEFAULT_MIN_ROWS
    min_labels: int = DEFAULT_MIN_LABELS
    checks: tuple[str, ...] | None = None

    def __post_init__(self):
        for name in ("window_rows", "min_rows", "min_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"monitoring {name} is {value!r}: expected a whole number >= 1")
        if self.min_rows > self.window_rows:
            raise ConfigError(f"monitoring min_rows {self.min_rows} is more than window_rows {self.window_rows}")
        unknown = sorted(set(self.checks or ()) - set(SIGNALS))
        if unknown:
            raise ConfigError(f"unknown monitoring checks {unknown}: expected some of {list(SIGNALS)}")


@dataclasses.dataclass(frozen=True)
class VersionInputs:
    """What the checks of one version compare with: its schema, drift baseline and quality thresholds
    (None: that check cannot be computed). ``extra`` holds what later checks need from the bundle."""

    model: str
    version: str
    schema: FeatureSchema
    detector: DriftDetector | None = None
    quality_metric: str | None = None  # default: DEFAULT_METRIC of the task
    quality_threshold: float | None = None
    estimated_threshold: float | None = None  # on the estimated accuracy (classifiers)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.quality_metric or DEFAULT_METRIC[self.schema.task]


@dataclasses.dataclass
class Window:
    """One window of one version's captured rows (capture records) and the labeled ones among them."""

    model: str
    version: str
    index: int
    records: list[dict]
    labeled: pd.DataFrame
    pooled: bool = False  # the version had fewer rows than a window: the whole range is one window
    _matrices: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return len(self.records)

    @property
    def start(self) -> str:
        return str(self.records[0].get("time"))

    @property
    def end(self) -> str:
        return str(self.records[-1].get("time"))

    @property
    def revisions(self) -> list[str]:
        return sorted({str(r.get("revision")) for r in self.records if r.get("revision")})

    def matrix(self, schema: FeatureSchema) -> np.ndarray:
        """The window's captured features, encoded as the servers encode a request (computed once)."""
        key = tuple(schema.names)
        if key not in self._matrices:
            columns = {name: [(r.get("features") or {}).get(name) for r in self.records] for name in schema.names}
            try:
                self._matrices[key] = schema.encode_columns(columns, len(self.records))
            except (TypeError, ValueError, DataError) as e:
                raise DataError(f"captured rows of {self.model}:{self.version} do not fit its schema: {e}") from e
        return self._matrices[key]

    @property
    def predictions(self) -> list:
        return [r.get("prediction") for r in self.records]

    def key(self) -> str:
        """A digest of the window's rows: the same rows, the same key (event ids)."""
        first, last = self.records[0], self.records[-1]
        text = "|".join(
            str(x)
            for x in (
                self.model,
                self.version,
                first.get("capture_id", first.get("request_id")),
                last.get("capture_id", last.get("request_id")),
                len(self.records),
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return {
            "model": self.model,
            "model_version": self.version,
            "window_index": self.index,
            "rows": self.rows,
            "labeled": len(self.labeled),
            "start": self.start,
            "end": self.end,
            "revisions": self.revisions,
            "pooled": self.pooled,
        }


Check = Callable[[Window, VersionInputs, JobOptions], "SignalResult | None"]  # None: cannot be computed


# -- the checks ---------------------------------------------------------------------------------


def _too_few(signal: str, have: int, need: int, what: str = "rows") -> SignalResult:
    return SignalResult(
        signal,
        "insufficient",
        rows=have,
        reason=f"the window has {have} {what}; the check needs at least {need} (monitor a longer range)",
    )


def check_feature_drift(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """The version's drift baseline on the window (``kfloop.monitoring.drift``): the smallest p-value
    against the corrected threshold; the drifted features and every p-value as evidence."""
    if inputs.detector is None:
        return None
    if window.rows < options.min_rows:
        return _too_few("feature_drift", window.rows, options.min_rows)
    data = inputs.detector.predict(window.matrix(inputs.schema))["data"]
    names = inputs.schema.names
    p_values = dict(zip(names, data["p_val"]))
    finite = [p for p in p_values.values() if p is not None]
    threshold = float(data["threshold"])
    drifted = {k: p for k, p in p_values.items() if p is not None and p < threshold}
    return SignalResult(
        "feature_drift",
        "alert" if data["is_drift"] else "ok",
        value=float(min(finite)) if finite else None,
        threshold=threshold,
        direction="below",
        rows=window.rows,
        evidence=to_jsonable(
            {
                "drifted": sorted(drifted, key=drifted.get),
                "p_val_by_feature": p_values,
                "distance_by_feature": dict(zip(names, data["distance"])),
            }
        ),
    )


def check_quality(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """Realized quality of the window's labeled rows (``quality_metrics``) against the version's threshold;
    absent without labels or a threshold."""
    if inputs.quality_threshold is None or len(window.labeled) == 0:
        return None
    if len(window.labeled) < options.min_labels:
        return _too_few("quality", len(window.labeled), options.min_labels, "labeled rows")
    schema, metric = inputs.schema, inputs.metric
    metrics = quality_metrics(schema, window.labeled[schema.target], window.labeled["prediction"])
    value = metrics.get(metric)
    if value is None:
        return SignalResult("quality", "insufficient", rows=len(window.labeled), reason=f"{metric} is undefined here")
    direction = "below" if higher_is_better(metric) else "above"
    threshold = float(inputs.quality_threshold)
    alert = value < threshold if direction == "below" else value > threshold
    return SignalResult(
        "quality",
        "alert" if alert else "ok",
        value=float(value),
        threshold=threshold,
        direction=direction,
        rows=len(window.labeled),
        evidence=to_jsonable({"metric": metric, "metrics": metrics}),
    )


def check_estimated_quality(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """The label-free estimate of accuracy (``estimate_accuracy``, CBPE-style) against its threshold;
    absent for regressors and without a threshold."""
    if inputs.schema.task == "regression" or inputs.estimated_threshold is None:
        return None
    if window.rows < options.min_rows:
        return _too_few("estimated_quality", window.rows, options.min_rows)
    value = estimate_accuracy(window.predictions)
    threshold = float(inputs.estimated_threshold)
    return SignalResult(
        "estimated_quality",
        "alert" if value < threshold else "ok",
        value=value,
        threshold=threshold,
        direction="below",
        rows=window.rows,
        evidence={"metric": "accuracy", "method": "mean top-class probability (uncalibrated)"},
    )


def check_calibrated_quality(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """CBPE / DLE with the version's calibrated estimator (``kfloop.monitoring.estimation``) when its
    bundle has one; else the uncalibrated estimate (``check_estimated_quality``)."""
    estimator = inputs.extra.get("estimator")
    if estimator is None:
        return check_estimated_quality(window, inputs, options)
    X = window.matrix(inputs.schema) if inputs.schema.task == "regression" else None
    return estimated_quality_signal(estimator, window.predictions, X, min_rows=options.min_rows)


def check_multivariate_drift(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """The domain classifier between the version's drift reference rows and the window's
    (``kfloop.monitoring.multivariate``); absent without reference rows."""
    reference = inputs.extra.get("reference_rows")
    if reference is None:
        return None
    return multivariate_drift(inputs.schema, reference, window.matrix(inputs.schema), min_rows=options.min_rows)


def check_attribution_drift(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """The window's SHAP ranking against training's (``kfloop.monitoring.attribution``); absent without
    the bundle's attribution baseline."""
    booster, baseline = inputs.extra.get("booster"), inputs.extra.get("attribution")
    if booster is None or baseline is None:
        return None
    return attribution_drift(booster, inputs.schema, baseline, window.matrix(inputs.schema), min_rows=options.min_rows)


def check_bias_drift(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """The gate's bias metrics per group on the window's labeled rows (``kfloop.monitoring.bias_drift``);
    absent without a sensitive feature at training or without labels."""
    bias = inputs.extra.get("bias") or {}
    feature = bias.get("sensitive_feature")
    if not feature or len(window.labeled) == 0:
        return None
    return bias_drift(
        inputs.schema, window.labeled, feature, positive_class=bias.get("positive_class", ""), baseline=bias
    )


def check_window_data_quality(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """The window's rows against the version's baseline constraints (``kfloop.monitoring.data_quality``:
    missing rates, ranges, unseen categories as captured); absent without a baseline."""
    baseline = inputs.extra.get("constraints")
    if baseline is None:
        return None
    unseen: collections.Counter[str] = collections.Counter()
    for record in window.records:
        unseen.update((record.get("unseen") or {}).keys())
    return check_data_quality(baseline, window.matrix(inputs.schema), dict(unseen))


def check_window_prediction_drift(window: Window, inputs: VersionInputs, options: JobOptions) -> SignalResult | None:
    """The window's captured predictions against the baseline's prediction distribution
    (``kfloop.monitoring.prediction_drift``); absent without a baseline."""
    baseline = inputs.extra.get("constraints")
    if baseline is None:
        return None
    return check_prediction_drift(baseline, window.predictions)


CHECKS: dict[str, Check] = {  # signal -> check; one line per signal
    "feature_drift": check_feature_drift,
    "data_quality": check_window_data_quality,
    "prediction_drift": check_window_prediction_drift,
    "multivariate_drift": check_multivariate_drift,
    "attribution_drift": check_attribution_drift,
    "quality": check_quality,
    "estimated_quality": check_calibrated_quality,
    "bias_drift": check_bias_drift,
}


# -- windows and the job ---------------------------------------------------------------------------


def split_windows(records: Sequence[dict], window_rows: int) -> list[tuple[list[dict], bool]]:
    """``(rows, pooled)`` per window: ``len // window_rows`` windows of nearly equal size, or one pooled
    window of every row when there are fewer than ``window_rows``; none for no rows."""
    if not records:
        return []
    if len(records) < window_rows:
        return [(list(records), True)]
    bounds = np.linspace(0, len(records), len(records) // window_rows + 1).round().astype(int)
    return [(list(records[a:b]), False) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclasses.dataclass
class WindowResult:
    window: Window
    results: dict[str, SignalResult]

    def to_dict(self) -> dict:
        return {**self.window.describe(), "signals": [r.to_dict() for r in self.results.values()]}


@dataclasses.dataclass
class JobResult:
    """Every window's results for one model over ``[since, until)``, and the versions without any."""

    model: str
    since: str | None
    until: str | None
    options: JobOptions
    windows: list[WindowResult]
    notes: list[str] = dataclasses.field(default_factory=list)  # versions skipped, and why

    def alerts(self) -> list[tuple[Window, SignalResult]]:
        return [(w.window, r) for w in self.windows for r in w.results.values() if r.alerting]

    def signals(self) -> list[str]:
        """The signals that gave a result for some window, in ``SIGNALS`` order."""
        seen = {s for w in self.windows for s in w.results}
        return [s for s in SIGNALS if s in seen]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per signal, windows by status."""
        out: dict[str, dict[str, int]] = {}
        for w in self.windows:
            for signal, result in w.results.items():
                by_status = out.setdefault(signal, {"ok": 0, "alert": 0, "insufficient": 0})
                by_status[result.status] += 1
        return out

    def events(self, source: str) -> list[dict]:
        """The CloudEvent of every alerting result (see the module docstring)."""
        return [signal_event(window, result, source) for window, result in self.alerts()]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "since": self.since,
            "until": self.until,
            "options": dataclasses.asdict(self.options),
            "windows": [w.to_dict() for w in self.windows],
            "counts": self.counts(),
            "alerts": len(self.alerts()),
            "notes": list(self.notes),
        }


def run_job(
    model: str,
    versions: Mapping[str, tuple[VersionInputs, Sequence[dict], pd.DataFrame]],
    options: JobOptions | None = None,
    *,
    since: str | None = None,
    until: str | None = None,
    checks: Mapping[str, Check] | None = None,
    notes: Sequence[str] = (),
) -> JobResult:
    """Run the checks over each version's ``(inputs, capture records in time order, labeled frame)``."""
    options = options or JobOptions()
    checks = dict(checks if checks is not None else CHECKS)
    if options.checks is not None:
        checks = {s: c for s, c in checks.items() if s in options.checks}
    windows = []
    for version, (inputs, records, labeled) in versions.items():
        for index, (rows, pooled) in enumerate(split_windows(records, options.window_rows)):
            ids = {r.get("request_id") for r in rows}
            mine = labeled[labeled["request_id"].isin(ids)] if len(labeled) else labeled
            window = Window(model, str(version), index, rows, mine, pooled)
            results = {}
            for signal, check in checks.items():
                result = check(window, inputs, options)
                if result is not None:
                    results[signal] = result
            windows.append(WindowResult(window, results))
    return JobResult(model, since, until, options, windows, list(notes))


def event_id(window: Window, signal: str) -> str:
    return f"monitor.{window.model}.{window.version}.{signal}.{window.index}.{window.key()}"


def signal_event(window: Window, result: SignalResult, source: str) -> dict:
    """The CloudEvent of one alerting result, in the form the live path emits it."""
    context = {
        "model": window.model,
        "model_version": window.version,
        "revision": ",".join(window.revisions),
        "window_index": window.index,
        "window_size": window.rows,
        "start": window.start,
        "end": window.end,
        "monitor": "scheduled",
    }
    if result.signal == "feature_drift":
        by_feature = result.evidence.get("p_val_by_feature", {})
        inner = {
            "is_drift": 1,
            "p_val": list(by_feature.values()),
            "threshold": result.threshold,
            "distance": list(result.evidence.get("distance_by_feature", {}).values()),
            "p_val_by_feature": by_feature,
            "window_index": window.index,
            "window_size": window.rows,
        }
        data = {"meta": {"name": "TabularDrift", "detector_type": "drift"}, "data": inner, **context}
        data.pop("window_index"), data.pop("window_size")
    else:
        data = {**context, **result.to_dict()}
        if result.signal == "quality":  # as the trigger's own quality check says it
            data.update(metric=result.evidence.get("metric"), n_labeled=result.rows)
    return make_event(result.event_type, source, data, subject=window.model, id=event_id(window, result.signal))

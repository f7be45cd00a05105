"""What the monitoring report shows, read from the store and put in plain rows.

``gather(store, model)`` collects one model's registry versions, capture records and event
log into ``ModelFacts``; the functions below turn them into rows for tables and plots. Events
are read tolerantly: a field an event lacks shows as missing, never as an error.

Shapes read from the event log (``kfloop.events.cloudevents`` types):

- window summaries (``kfloop.monitoring.window_log``): one per checked window, clean or drifted; the
  drift chart, the status and the table use them, and fall back to the drift events below for a
  store written before summaries existed (then only the drifted windows are known). Their
  ``signals`` (``SignalResult.to_dict()`` each: feature drift, data quality, prediction drift...)
  feed the status's alerting signals and the signal table; a signal no summary has is absent.
- ``io.kfloop.drift.detected``: Alibi's envelope ``{"meta", "data": {"is_drift", "p_val",
  "threshold", "distance", "p_val_by_feature", "window_index", "window_size"}}`` plus context
  (``model_version`` or ``version``); ``p_val_by_feature`` may also sit next to ``data``.
- ``io.kfloop.rollout.decision``: ``{"canary_version"|"version", "stable_version", "step",
  "percent"|"canary_percent"|"weight", "verdict"|"decision", "reason",
  "metrics"|"comparisons"|"evidence"}``; evidence is a list of ``{"metric", "stable",
  "canary", "threshold", "passed"}`` or a mapping from metric name to such a dict or a value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections import Counter

from kfloop import timestamps
from kfloop.monitoring.capture import read_captures
from kfloop.monitoring.window_log import read_windows
from kfloop.names import (
    CAPTURES_PREFIX,
    DRIFT_DETECTED,
    EVENTS_PREFIX,
    FEEDBACK,
    QUALITY_DEGRADED,
    RETRAIN_FINISHED,
    RETRAIN_STARTED,
    ROLLOUT_DECISION,
    SIGNALS,
    WINDOWS_PREFIX,
)
from kfloop.store.event_log import read_events
from kfloop.store.objects import ObjectStore
from kfloop.store.registry import Registry, VersionRecord

FINAL_VERDICTS = {"promote", "promoted", "rollback", "rolled-back", "rolled_back", "abort", "aborted"}
BUCKETS = [
    (60, "1 min"),
    (300, "5 min"),
    (900, "15 min"),
    (3600, "1 h"),
    (6 * 3600, "6 h"),
    (86400, "1 day"),
    (7 * 86400, "1 week"),
]


@dataclasses.dataclass
class ModelFacts:
    """Everything recorded about one model."""

    model: str
    versions: list[VersionRecord]
    captures: list[dict]
    events: list[dict]
    windows: list[dict] = dataclasses.field(default_factory=list)  # window summaries, oldest first

    @property
    def empty(self) -> bool:
        return not (self.versions or self.captures or self.events or self.windows)

    def of_type(self, *types: str) -> list[dict]:
        return [e for e in self.events if e.get("type") in types]


def models_in(store: ObjectStore) -> list[str]:
    """Every model with registered versions, captures or events."""
    names = set(Registry(store).models())
    for prefix in (EVENTS_PREFIX, CAPTURES_PREFIX, WINDOWS_PREFIX):
        names.update(key.split("/")[1] for key in store.list(prefix + "/") if key.count("/") >= 2)
    return sorted(names)


def gather(store: ObjectStore, model: str) -> ModelFacts:
    registry = Registry(store)
    versions = registry.list_versions(model) if model in registry.models() else []
    return ModelFacts(
        model, versions, read_captures(store, model), read_events(store, model), read_windows(store, model)
    )


def parse_time(value: object) -> dt.datetime | None:
    """An RFC 3339 / ISO 8601 text as an aware UTC datetime; None when it is not one."""
    try:
        return timestamps.parse_time(str(value))
    except ValueError:
        return None


def production(facts: ModelFacts) -> VersionRecord | None:
    return next((v for v in reversed(facts.versions) if v.stage == "production"), None)


def canary(facts: ModelFacts) -> str | None:
    """The version answering as canary in the newest captures, unless a final rollout decision
    (promote or rollback) was recorded after that capture."""
    last = next((c for c in reversed(facts.captures) if c.get("revision") == "canary"), None)
    if last is None:
        return None
    when = parse_time(last.get("time"))
    for decision in rollout_decisions(facts):
        if decision["verdict"].lower() in FINAL_VERDICTS and decision["time"] and when and decision["time"] >= when:
            return None
    return str(last.get("model_version"))


def counts(facts: ModelFacts) -> dict[str, int]:
    by_type = Counter(e.get("type") for e in facts.events)
    return {
        "requests": len(facts.captures),
        "drift events": by_type[DRIFT_DETECTED],
        "retraining runs started": by_type[RETRAIN_STARTED],
        "retraining runs finished": by_type[RETRAIN_FINISHED],
        "rollout decisions": by_type[ROLLOUT_DECISION],
        "events in total": len(facts.events),
    }


def timeline_events(facts: ModelFacts) -> list[dict]:
    """The events as the timeline shows them: each run of consecutive feedback posts (one event per
    post) folded into one ``io.kfloop.feedback`` row dated at its first post, whose data counts the
    posts and labels and names the last post's time; every other event as recorded."""
    shown: list[dict] = []
    for is_feedback, run in itertools.groupby(facts.events, key=lambda e: e.get("type") == FEEDBACK):
        if not is_feedback:
            shown.extend(run)
            continue
        posts = list(run)
        labels = sum(_label_count(p.get("data")) for p in posts)
        shown.append(
            {
                "time": posts[0].get("time"),
                "type": FEEDBACK,
                "source": posts[0].get("source"),
                "data": {"posts": len(posts), "labels": labels, "until": posts[-1].get("time")},
            }
        )
    return shown


def _label_count(data: object) -> int:
    labels = data.get("labels") if isinstance(data, dict) else None
    return len(labels) if isinstance(labels, (list, dict)) else 0


def drift_windows(facts: ModelFacts) -> list[dict]:
    """One row per recorded drift window: time (its end), start, version, index, size, is_drift,
    p-values, threshold. From the window summaries when there are any, else from the drift events."""
    if facts.windows:
        return [
            {
                "time": parse_time(w.get("end")),
                "start": parse_time(w.get("start")),
                "version": "?" if w.get("model_version") is None else str(w["model_version"]),
                "window_index": w.get("window_index"),
                "window_size": w.get("rows"),
                "is_drift": bool(w.get("is_drift")),
                "threshold": _threshold(w.get("threshold")),
                "p_values": {str(k): _number(v) for k, v in (w.get("p_values") or {}).items()},
                "signals": _signal_results(w.get("signals")),
            }
            for w in facts.windows
        ]
    rows = []
    for event in facts.of_type(DRIFT_DETECTED):
        outer = event.get("data") if isinstance(event.get("data"), dict) else {}
        inner = outer.get("data") if isinstance(outer.get("data"), dict) else outer
        p_by = inner.get("p_val_by_feature") or outer.get("p_val_by_feature")
        if not isinstance(p_by, dict):
            p_by = {f"feature {i}": p for i, p in enumerate(_as_list(inner.get("p_val")))}
        rows.append(
            {
                "time": parse_time(event.get("time")),
                "start": parse_time(inner.get("window_start")),
                "version": _version(outer),
                "window_index": inner.get("window_index", outer.get("window_index")),
                "window_size": inner.get("window_size", outer.get("window_size")),
                "is_drift": bool(inner.get("is_drift")),
                "threshold": _threshold(inner.get("threshold")),
                "p_values": {str(k): _number(v) for k, v in p_by.items()},
                "signals": [],
            }
        )
    return rows


def rollout_decisions(facts: ModelFacts) -> list[dict]:
    """One row per rollout decision: time, canary and stable version, step, percent, verdict, evidence."""
    rows = []
    for event in facts.of_type(ROLLOUT_DECISION):
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        rows.append(
            {
                "time": parse_time(event.get("time")),
                "canary": _first(data, "canary_version", "version", "model_version"),
                "stable": _first(data, "stable_version"),
                "step": _first(data, "step"),
                "percent": _first(data, "percent", "canary_percent", "weight", "traffic_percent"),
                "verdict": str(_first(data, "verdict", "decision", "action") or "-"),
                "reason": str(_first(data, "reason") or ""),
                "evidence": evidence(_first(data, "metrics", "comparisons", "evidence", "analysis")),
            }
        )
    return rows


def evidence(value: object) -> list[dict]:
    """Compared metrics as ``[{"metric", "stable", "canary", "threshold", "passed"}]``."""
    if isinstance(value, dict):
        value = [{"metric": k, **(v if isinstance(v, dict) else {"canary": v})} for k, v in value.items()]
    if not isinstance(value, list):
        return []
    return [
        {
            "metric": str(_first(item, "metric", "name") or "?"),
            "stable": item.get("stable"),
            "canary": item.get("canary"),
            "threshold": item.get("threshold"),
            "passed": _first(item, "passed", "ok"),
        }
        for item in value
        if isinstance(item, dict)
    ]


def traffic(facts: ModelFacts) -> dict:
    """Requests per time bucket for each ``<revision> v<version>``: ``{"starts": [bucket start],
    "series": {label: [count per bucket]}, "width_s": bucket seconds, "bucket": "5 min"}``."""
    stamped = [
        (parse_time(c.get("time")), f"{c.get('revision') or '?'} v{c.get('model_version') or '?'}")
        for c in facts.captures
    ]
    stamped = [(t, label) for t, label in stamped if t is not None]
    if not stamped:
        return {"starts": [], "series": {}, "width_s": 0, "bucket": ""}
    first, last = min(t for t, _ in stamped), max(t for t, _ in stamped)
    width, name = next(((w, n) for w, n in BUCKETS if (last - first).total_seconds() / w <= 48), BUCKETS[-1])
    origin = first.timestamp() // width * width
    n = int((last.timestamp() - origin) // width) + 1
    series: dict[str, list[int]] = {label: [0] * n for label in sorted({label for _, label in stamped})}
    for when, label in stamped:
        series[label][int((when.timestamp() - origin) // width)] += 1
    starts = [dt.datetime.fromtimestamp(origin + i * width, dt.timezone.utc) for i in range(n)]
    return {"starts": starts, "series": series, "width_s": width, "bucket": name}


def primary_metric(record: VersionRecord | None) -> tuple[str | None, float | None]:
    """The gate's metric of a version and its value, e.g. ``("auc", 0.91)``."""
    if record is None:
        return None, None
    metric = (record.metrics.get("gate") or {}).get("metric")
    value = (record.metrics.get("metrics") or {}).get(metric) if metric else None
    return metric, _number(value)


def _version(data: dict) -> str:
    value = _first(data, "model_version", "version")
    return "?" if value is None else str(value)


def _first(data: dict, *keys: str) -> object:
    return next((data[k] for k in keys if data.get(k) is not None), None)


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _threshold(value: object) -> float | None:
    """A scalar threshold; for FDR without drift Alibi gives one per rank: the strictest is shown."""
    values = [v for v in (_number(x) for x in _as_list(value)) if v is not None]
    return min(values) if values else None


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def live_quality(store: ObjectStore, facts: ModelFacts) -> dict:
    """Measured quality per version and window (``kfloop.monitoring.quality.rolling_quality`` on the
    labeled captures) and, per version, its label-free estimate:

    - a version whose bundle has a calibrator (``signals/calibration.json``): the calibrated CBPE
      (classifiers) or DLE (regressors) estimate of each labeled window, made from the captured
      predictions alone, next to the realized metric (``estimation.estimate_vs_realized``'s rows);
    - an older bundle without one (classifiers): the uncalibrated mean confidence of each window of
      captured predictions (``quality.estimated_quality``), labeled so.

    ``{"metric", "window", "rows": [measured windows], "estimates": [estimate-vs-realized windows],
    "calibrated": [versions], "series": {"v2 measured": [(end, value)], "v2 estimated (calibrated)":
    [...], "v1 estimated (uncalibrated)": [...]}, "note"}``."""
    out: dict = {"metric": None, "window": None, "rows": [], "estimates": [], "calibrated": [], "series": {}}
    record = production(facts) or (facts.versions[-1] if facts.versions else None)
    if record is None:
        return {**out, "note": "No labels yet (and no registered version whose schema could read them)."}
    import pandas as pd

    from kfloop.errors import ChecksumError, DataError
    from kfloop.monitoring import (
        feedback,  # pandas and scikit-learn: loaded only when a report is built
        quality,
    )
    from kfloop.schema import FeatureSchema

    schema = FeatureSchema.from_dict(record.schema)
    out["metric"] = quality.DEFAULT_METRIC[schema.task]
    labeled = feedback.labeled_frame(store, facts.model, schema)
    notes = [] if len(labeled) else ["No labels yet."]
    if len(labeled):
        out["window"] = quality_window(len(labeled))
        out["rows"] = quality.rolling_quality(schema, labeled, out["window"])
        if not out["rows"]:
            notes.append(f"{len(labeled)} labeled rows: fewer than one window of {out['window']} per version.")
        _add_series(out["series"], out["rows"], out["metric"], "measured")
    estimators = {}
    for version in facts.versions:
        try:
            estimator = load_bundle_estimator(store, version)
        except (DataError, ChecksumError) as e:
            notes.append(f"v{version.version}'s calibrator is not used: {e}")
            continue
        if estimator is not None:
            estimators[str(version.version)] = estimator
    out["calibrated"] = sorted(estimators, key=_version_key)
    measured = {(str(r["model_version"]), r["window_index"]): r for r in out["rows"]}
    versions = labeled["model_version"].astype(str) if len(labeled) else pd.Series(dtype=str)
    for name, estimator in sorted(estimators.items(), key=lambda item: _version_key(item[0])):
        own = labeled[versions == name]
        if len(own) < (out["window"] or 1):
            continue
        try:
            out["estimates"] += _estimates_vs_realized(estimator, own, out["window"], measured)
        except (DataError, ValueError) as e:  # captured predictions the estimator cannot read
            notes.append(f"No calibrated estimate of v{name}'s labeled windows: {e}")
    for row in out["estimates"]:
        end, value = parse_time(row["end"]), _number(row["estimated"].get(out["metric"]))
        if end is not None and value is not None:
            out["series"].setdefault(f"v{row['model_version']} estimated (calibrated)", []).append((end, value))
    for name, estimator in estimators.items():  # no labeled window yet: the estimate of the captures alone
        if any(str(r["model_version"]) == name for r in out["estimates"]):
            continue
        captured = [c for c in facts.captures if str(c.get("model_version")) == name]
        try:
            points = _captured_estimates(estimator, captured, quality_window(len(facts.captures)), out["metric"])
        except (DataError, ValueError) as e:
            notes.append(f"No calibrated estimate of v{name}'s captures: {e}")
        else:
            if points:
                out["series"][f"v{name} estimated (calibrated)"] = points
    uncalibrated = [c for c in facts.captures if str(c.get("model_version")) not in estimators]
    if out["metric"] == "accuracy" and uncalibrated:
        try:
            estimates = quality.estimated_quality(uncalibrated, quality_window(len(facts.captures)))
        except DataError as e:
            notes.append(f"No uncalibrated estimate: {e}")
        else:
            _add_series(out["series"], estimates, "estimated_accuracy", "estimated (uncalibrated)")
    return {**out, "note": " ".join(notes)}


def _estimates_vs_realized(estimator, labeled, window: int, measured: dict) -> list[dict]:
    """``kfloop.monitoring.estimation.estimate_vs_realized`` of one version's labeled rows, with the
    realized metrics taken from the ``rolling_quality`` windows already measured (the same windows:
    computing them again would double the report's cost)."""
    from kfloop.monitoring.quality import windows
    from kfloop.timestamps import rfc3339

    schema, out = estimator.schema, []
    for version, index, rows in windows(labeled, window):
        X = schema.encode_frame(rows) if schema.task == "regression" else None
        estimated = {k: v for k, v in estimator.estimate(rows["prediction"].tolist(), X).items() if k != "n"}
        realized = measured.get((version, index), {})
        out.append(
            {
                "model_version": version,
                "window_index": index,
                "start": rfc3339(rows["time"].iloc[0]),
                "end": rfc3339(rows["time"].iloc[-1]),
                "n": len(rows),
                "estimated": estimated,
                "realized": {k: realized.get(k) for k in estimated},
            }
        )
    return out


def _captured_estimates(estimator, captures: list[dict], window: int, metric: str) -> list[tuple[dt.datetime, float]]:
    """The calibrated estimate of ``metric`` for every complete window of captured predictions."""
    import pandas as pd

    from kfloop.monitoring.quality import windows

    if not captures:
        return []
    schema, points = estimator.schema, []
    for _, _, rows in windows(pd.DataFrame(captures), window):
        X = None
        if schema.task == "regression":
            served = pd.DataFrame([f if isinstance(f, dict) else {} for f in rows["features"]])
            X = schema.encode_frame(served.reindex(columns=schema.names))
        value = _number(estimator.estimate(rows["prediction"].tolist(), X).get(metric))
        if value is not None:
            points.append((rows["time"].iloc[-1].to_pydatetime(), value))
    return points


def load_bundle_estimator(store: ObjectStore, record: VersionRecord):
    """The quality estimator (``kfloop.monitoring.estimation.Estimator``) of a version's bundle, or None
    when the bundle has no calibrator (trained before it existed). Each file is checked against the
    version record's checksum; ``DataError`` (or ``ChecksumError``) when one differs or does not match
    the version's schema."""
    import tempfile
    from pathlib import Path

    from kfloop.errors import ChecksumError
    from kfloop.store import bundle
    from kfloop.store.objects import sha256_bytes

    if bundle.CALIBRATION_FILE not in record.files:
        return None
    from kfloop.monitoring.estimation import load_estimator
    from kfloop.schema import FeatureSchema

    with tempfile.TemporaryDirectory(prefix="kfloop-report-") as folder:
        for rel in (bundle.CALIBRATION_FILE, bundle.RESIDUAL_ABS_FILE, bundle.RESIDUAL_SQ_FILE):
            entry = record.files.get(rel)
            if entry is None:
                continue
            data = store.get(f"{record.bundle_key}/{rel}")
            if sha256_bytes(data) != entry["sha256"]:
                raise ChecksumError(f"{record.ref}: {rel} in the store does not match the version record")
            target = Path(folder) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return load_estimator(folder, FeatureSchema.from_dict(record.schema))


def quality_window(rows: int) -> int:
    """Rows per quality window: about ten windows, between 10 and 200 rows each."""
    return min(200, max(10, rows // 10))


def _add_series(series: dict, rows: list[dict], metric: str, kind: str) -> None:
    for row in rows:
        end, value = parse_time(row.get("end")), _number(row.get(metric))
        if end is not None and value is not None:
            series.setdefault(f"v{row['model_version']} {kind}", []).append((end, value))


# -- the status at the top, and the features that moved ------------------------------------------

STATUS_WINDOWS = 5  # a version is drifting when its last window, or half of its last 5, drifted


def version_status(facts: ModelFacts, windows: list[dict] | None = None) -> list[dict]:
    """One row per version (registered or seen in windows), newest first: ``version``, ``stage``,
    ``status`` (``degraded``: a quality-degraded event names it; ``drifting``: its last window, or half
    of its last ``STATUS_WINDOWS``, drifted, or so did another drift signal's (prediction,
    multivariate, attribution, bias); ``data issues``: so did the data-quality check's; ``healthy``:
    checked windows, none of those; ``not checked``: no window), ``windows``, ``drifted``,
    ``last_window``, ``degraded`` (count and last event data), ``alerts``: the signals other than
    feature drift that alerted in those last windows (``recent_alerts``), and
    ``decision``/``decision_time``: the newest registry stage change or rollout verdict."""
    windows = drift_windows(facts) if windows is None else windows
    stages = {str(v.version): v for v in facts.versions}
    names = sorted({*stages, *(w["version"] for w in windows)}, key=_version_key, reverse=True)
    degraded: dict[str, list[dict]] = {}
    for event in facts.of_type(QUALITY_DEGRADED):
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        degraded.setdefault(_version(data), []).append({**data, "time": parse_time(event.get("time"))})
    decisions = rollout_decisions(facts)
    rows = []
    for name in names:
        own = [w for w in windows if w["version"] == name]
        recent = own[-STATUS_WINDOWS:]
        drifting = bool(recent) and (recent[-1]["is_drift"] or 2 * sum(w["is_drift"] for w in recent) >= len(recent))
        alerts = recent_alerts(recent)
        sustained = {a["signal"] for a in alerts if a["sustained"]}
        drifting = drifting or bool(sustained & set(DRIFT_SIGNALS[1:]))
        status = (
            "degraded"
            if degraded.get(name)
            else "drifting"
            if drifting
            else "data issues"
            if "data_quality" in sustained
            else "healthy"
            if own
            else "not checked"
        )
        record = stages.get(name)
        choices = [
            (parse_time(h.get("time")), f"{h.get('stage') or 'alias ' + str(h.get('alias'))}: {h.get('reason') or '-'}")
            for h in (record.stage_history if record else ())
        ]
        choices += [
            (
                d["time"],
                f"canary {d['verdict']}"
                + (f" at {d['percent']}%" if d["percent"] is not None else "")
                + (f": {d['reason']}" if d["reason"] else ""),
            )
            for d in decisions
            if str(d["canary"]) == name
        ]
        choices = [c for c in choices if c[0] is not None]
        when, what = max(choices, key=lambda c: c[0]) if choices else (None, None)
        rows.append(
            {
                "version": name,
                "stage": record.stage if record else None,
                "status": status,
                "windows": len(own),
                "drifted": sum(w["is_drift"] for w in own),
                "last_window": own[-1] if own else None,
                "degraded": degraded.get(name, []),
                "alerts": [a for a in alerts if a["signal"] != "feature_drift"],
                "decision": what,
                "decision_time": when,
            }
        )
    return rows


def moved_features(windows: list[dict], limit: int = 4, min_windows: int = 2) -> list[dict]:
    """The (version, feature) pairs whose p-value fell below the threshold, most drifted windows first:
    ``{"version", "feature", "windows", "start", "end"}`` (the span of those windows), at most ``limit``.
    Pairs that moved in fewer than ``min_windows`` windows (a lone false alarm) are left out, unless no
    pair moved that often."""
    moved: dict[tuple[str, str], list[dict]] = {}
    for w in windows:
        if w["threshold"] is None:
            continue
        for feature, p in w["p_values"].items():
            if p is not None and p < w["threshold"]:
                moved.setdefault((w["version"], feature), []).append(w)
    ranked = sorted(moved.items(), key=lambda item: (-len(item[1]), _version_key(item[0][0]), item[0][1]))
    ranked = [item for item in ranked if len(item[1]) >= min_windows] or ranked
    out = []
    for (version, feature), drifted in ranked[:limit]:
        starts = [w["start"] or w["time"] for w in drifted if (w["start"] or w["time"]) is not None]
        ends = [w["time"] for w in drifted if w["time"] is not None]
        out.append(
            {
                "version": version,
                "feature": feature,
                "windows": len(drifted),
                "start": min(starts) if starts else None,
                "end": max(ends) if ends else None,
            }
        )
    return out


def feature_distributions(store: ObjectStore, facts: ModelFacts, moved: list[dict]) -> list[dict]:
    """For each moved (version, feature): the version's drift reference values and the values it served
    in the drifted windows' span, ``{"version", "feature", "kind", "reference", "live", "categories"}``
    (numeric values, or category labels; missing values left out). A version whose bundle has no
    readable reference is skipped."""
    import io

    import numpy as np
    import pandas as pd

    from kfloop.schema import FeatureSchema
    from kfloop.store.objects import sha256_bytes

    records = {str(v.version): v for v in facts.versions}
    out, references = [], {}
    for item in moved:
        record = records.get(item["version"])
        if record is None:
            continue
        if item["version"] not in references:
            entry = record.files.get("drift/x_ref.npy")
            try:
                raw = store.get(f"{record.bundle_key}/drift/x_ref.npy") if entry else None
                ok = raw is not None and sha256_bytes(raw) == entry["sha256"]
                references[item["version"]] = np.load(io.BytesIO(raw), allow_pickle=False) if ok else None
            except Exception:  # noqa: BLE001 - an unreadable reference only leaves its plot out
                references[item["version"]] = None
        x_ref = references[item["version"]]
        schema = FeatureSchema.from_dict(record.schema)
        if x_ref is None or item["feature"] not in schema.names or x_ref.shape[1] != len(schema.names):
            continue
        j = schema.names.index(item["feature"])
        feature = schema.features[j]
        served = [
            c.get("features") or {}
            for c in facts.captures
            if str(c.get("model_version")) == item["version"] and _within(parse_time(c.get("time")), item)
        ]
        if not served:
            continue
        live = schema.encode_frame(pd.DataFrame(served).reindex(columns=schema.names))[:, j]
        reference = x_ref[:, j]
        if feature.kind == "categorical":
            labels = [*feature.categories, "missing or unseen"]

            def named(codes, labels=labels):
                codes = np.where(np.isfinite(codes), codes, len(labels) - 1).astype(int)
                return [labels[min(max(c, 0), len(labels) - 1)] for c in codes]

            out.append(
                {
                    **item,
                    "kind": "categorical",
                    "categories": labels,
                    "reference": named(reference),
                    "live": named(live),
                }
            )
        else:
            out.append(
                {
                    **item,
                    "kind": "numeric",
                    "categories": [],
                    "reference": [float(v) for v in reference if np.isfinite(v)],
                    "live": [float(v) for v in live if np.isfinite(v)],
                }
            )
    return out


def _within(when: dt.datetime | None, span: dict) -> bool:
    if when is None:
        return False
    return (span["start"] is None or when >= span["start"]) and (span["end"] is None or when <= span["end"])


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if str(version).isdigit() else (1, 0, str(version))


# -- every monitoring signal of the window summaries ----------------------------------------------

SIGNAL_STATUSES = ("ok", "alert", "insufficient")  # kfloop.monitoring.signals.STATUSES
DRIFT_SIGNALS = ("feature_drift", "prediction_drift", "multivariate_drift", "attribution_drift", "bias_drift")
CHECK_NAMES = {
    "missing_rate": "missing rate up",
    "out_of_range": "out of range",
    "unseen_categories": "unseen categories",
    "rejected_requests": "rejected requests",
}


def _signal_results(value: object) -> list[dict]:
    """The ``signals`` list of a window summary (``SignalResult.to_dict()`` each), read tolerantly: an
    entry that names no known signal or status is left out, and so is a second result of one signal
    (the first counts); missing fields are None or empty."""
    out, seen = [], set()
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict) or item.get("signal") not in SIGNALS or item["signal"] in seen:
            continue
        if item.get("status") not in SIGNAL_STATUSES:
            continue
        seen.add(item["signal"])
        evidence = item.get("evidence")
        out.append(
            {
                "signal": item["signal"],
                "status": item["status"],
                "value": _number(item.get("value")),
                "threshold": _number(item.get("threshold")),
                "direction": item.get("direction") if item.get("direction") in ("above", "below") else "below",
                "rows": item.get("rows"),
                "reason": str(item.get("reason") or ""),
                "evidence": evidence if isinstance(evidence, dict) else {},
            }
        )
    return out


def _result(window: dict, signal: str) -> dict | None:
    return next((s for s in window.get("signals") or () if s["signal"] == signal), None)


def signal_detail(result: dict) -> str:
    """What an alerting result names: the violated checks (data quality), the drifted outputs or
    features, or the features a classifier used (multivariate drift); empty when it names nothing."""
    evidence = result.get("evidence") or {}
    if result["signal"] == "data_quality":
        seen: list[str] = []
        for v in _as_list(evidence.get("violations")):
            if isinstance(v, dict):
                what = CHECK_NAMES.get(str(v.get("check")), str(v.get("check")))
                text = f"{v['feature']} {what}" if v.get("feature") else what
                if text not in seen:
                    seen.append(text)
        return ", ".join(seen)
    outputs = evidence.get("drifted_outputs")
    if isinstance(outputs, list) and outputs:
        return "output " + ", ".join(str(n) for n in outputs[:4])
    for key in ("features", "drifted", "top_features"):
        named = evidence.get(key)
        if isinstance(named, list) and named:
            return ", ".join(str(n) for n in named[:4])
    return ""


def signal_table(windows: list[dict]) -> list[dict]:
    """Per signal (in ``kfloop.names.SIGNALS`` order) and version: ``{"signal", "version", "ok",
    "alert", "insufficient", "last"`` (the newest result with a verdict, or None)``, "reasons"``
    (why windows had too few rows, with their counts)``}``. Only signals some window has a result
    for: a signal that was never computed is absent, not zero."""
    cells: dict[tuple[str, str], dict] = {}
    for w in windows:
        for result in w.get("signals") or ():
            row = cells.setdefault(
                (result["signal"], w["version"]),
                {"signal": result["signal"], "version": w["version"], "last": None, "reasons": Counter()}
                | dict.fromkeys(SIGNAL_STATUSES, 0),
            )
            row[result["status"]] += 1
            if result["status"] == "insufficient":
                row["reasons"][result["reason"]] += 1
            else:
                row["last"] = {**result, "time": w["time"], "window_index": w["window_index"]}
    order = {name: k for k, name in enumerate(SIGNALS)}
    return sorted(cells.values(), key=lambda r: (order[r["signal"]], _version_key(r["version"])))


def last_violations(windows: list[dict]) -> list[dict]:
    """Per version (newest first), its last window whose data-quality check was violated:
    ``{"version", "window_index", "time", "rows", "violations"}`` (the result's evidence list)."""
    last: dict[str, dict] = {}
    for w in windows:
        result = _result(w, "data_quality")
        if result is not None and result["status"] == "alert":
            violations = [v for v in _as_list(result["evidence"].get("violations")) if isinstance(v, dict)]
            last[w["version"]] = {
                "version": w["version"],
                "window_index": w["window_index"],
                "time": w["time"],
                "rows": result["rows"],
                "violations": violations,
            }
    return [last[v] for v in sorted(last, key=_version_key, reverse=True)]


def recent_alerts(recent: list[dict]) -> list[dict]:
    """The signals that alerted in ``recent`` windows (one version's last few), in ``SIGNALS`` order:
    ``{"signal", "alerts", "verdicts"`` (windows with an ok or alert result)``, "sustained"`` (the last
    verdict alerted, or half of the verdicts did)``, "detail"`` (``signal_detail`` of the last alert)``}``."""
    out = []
    for signal in SIGNALS:
        results = [r for r in (_result(w, signal) for w in recent) if r is not None and r["status"] != "insufficient"]
        alerts = [r for r in results if r["status"] == "alert"]
        if alerts:
            sustained = results[-1]["status"] == "alert" or 2 * len(alerts) >= len(results)
            out.append(
                {
                    "signal": signal,
                    "alerts": len(alerts),
                    "verdicts": len(results),
                    "sustained": sustained,
                    "detail": signal_detail(alerts[-1]),
                }
            )
    return out

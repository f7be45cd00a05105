"""The scheduled monitoring job's core: windows over captured rows (pooled for low traffic), the registry
of checks, results absent when a signal cannot be computed, and the events the live path emits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import ConfigError
from kfloop.monitoring.capture import capture_record
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.job import CHECKS, JobOptions, VersionInputs, run_job, split_windows
from kfloop.monitoring.signals import SignalResult
from kfloop.names import DRIFT_DETECTED, ESTIMATED_QUALITY_DROPPED, QUALITY_DEGRADED, SIGNALS
from kfloop.retraining.policy import read_signal
from kfloop.schema import infer_schema
from tests.fakes.bundles import churn_frame

NO_LABELS = pd.DataFrame(columns=["request_id"])


@pytest.fixture(scope="module")
def reference():
    frame = churn_frame(2000, seed=0)
    schema = infer_schema(frame, "churned")
    return schema, fit_baseline(schema, schema.encode_frame(frame), backend="scipy")


def captures(frame: pd.DataFrame, version: str = "1", confidence: float = 0.9, prefix: str = "r") -> list[dict]:
    features = frame.drop(columns=["churned"]).to_dict("records")
    return [
        capture_record(
            "churn", version, {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()},
            [1 - confidence, confidence], request_id=f"{prefix}{i}", capture_id=f"{prefix}{i}",
            time=f"2026-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000000Z",
        )
        for i, row in enumerate(features)
    ]  # fmt: skip


def inputs(reference, **kw) -> VersionInputs:
    schema, detector = reference
    return VersionInputs("churn", "1", schema, detector, **kw)


def test_windows_are_at_least_window_rows_and_low_traffic_is_pooled():
    rows = [{"i": i} for i in range(1250)]
    windows = split_windows(rows, 500)
    assert [len(w) for w, _ in windows] == [625, 625] and not any(p for _, p in windows)
    assert [r for w, _ in windows for r in w] == rows
    assert [(len(w), pooled) for w, pooled in split_windows(rows[:120], 500)] == [(120, True)]
    assert split_windows([], 500) == []


def test_clean_windows_stay_quiet_and_a_shift_is_detected_with_its_features(reference):
    clean = churn_frame(1500, seed=1)
    shifted = churn_frame(500, seed=2).assign(tenure=lambda f: f["tenure"] + 30)
    records = captures(pd.concat([clean, shifted], ignore_index=True))
    result = run_job("churn", {"1": (inputs(reference), records, NO_LABELS)}, JobOptions(window_rows=500))
    statuses = [w.results["feature_drift"].status for w in result.windows]
    assert statuses == ["ok", "ok", "ok", "alert"]
    ((window, alert),) = result.alerts()
    assert window.index == 3 and alert.evidence["drifted"] == ["tenure"] and alert.value < alert.threshold
    assert result.signals() == ["feature_drift"]  # no labels, no estimate threshold: absent, not zero


def test_a_low_traffic_model_gets_one_pooled_window_and_a_verdict(reference):
    shifted = churn_frame(150, seed=3).assign(tenure=lambda f: f["tenure"] + 30)
    result = run_job("churn", {"1": (inputs(reference), captures(shifted), NO_LABELS)}, JobOptions(window_rows=500))
    (window,) = result.windows
    assert window.window.pooled and window.window.rows == 150
    assert window.results["feature_drift"].status == "alert"


def test_too_few_rows_say_so_instead_of_a_verdict(reference):
    few = captures(churn_frame(20, seed=4))
    options = JobOptions(window_rows=500, min_rows=50)
    result = run_job("churn", {"1": (inputs(reference, estimated_threshold=0.8), few, NO_LABELS)}, options)
    drift, estimate = result.windows[0].results["feature_drift"], result.windows[0].results["estimated_quality"]
    assert drift.status == estimate.status == "insufficient" and "has 20 rows" in drift.reason
    assert result.alerts() == [] and result.events("kfloop/monitor") == []


def labeled(records: list[dict], right: int) -> pd.DataFrame:
    """Labels for ``records``: the first ``right`` agree with the predicted class (1), the rest not."""
    labels = ["1" if i < right else "0" for i in range(len(records))]
    return pd.DataFrame(
        {"request_id": [r["request_id"] for r in records], "churned": labels,
         "prediction": [r["prediction"] for r in records], "model_version": "1",
         "time": pd.to_datetime([r["time"] for r in records], utc=True)}
    )  # fmt: skip


def test_quality_uses_the_labels_of_each_window_and_is_absent_without_labels(reference):
    records = captures(churn_frame(400, seed=5))
    frame = labeled(records[:200], right=120)  # 60% accurate in window 0; window 1 has no labels
    options = JobOptions(window_rows=200)
    result = run_job("churn", {"1": (inputs(reference, quality_threshold=0.7), records, frame)}, options)
    quality = result.windows[0].results["quality"]
    assert (quality.status, quality.value, quality.threshold, quality.direction) == ("alert", 0.6, 0.7, "below")
    assert "quality" not in result.windows[1].results
    few = run_job("churn", {"1": (inputs(reference, quality_threshold=0.7), records, frame.iloc[:10])}, options)
    assert few.windows[0].results["quality"].status == "insufficient"


def test_estimated_quality_alerts_on_low_confidence_and_is_absent_without_a_threshold(reference):
    records = captures(churn_frame(300, seed=6), confidence=0.6)
    options = JobOptions(window_rows=300)
    result = run_job("churn", {"1": (inputs(reference, estimated_threshold=0.8), records, NO_LABELS)}, options)
    estimate = result.windows[0].results["estimated_quality"]
    assert estimate.status == "alert" and estimate.value == pytest.approx(0.6)
    quiet = run_job("churn", {"1": (inputs(reference), records, NO_LABELS)}, options)
    assert "estimated_quality" not in quiet.windows[0].results


def test_adding_a_check_is_one_entry_and_none_means_absent(reference):
    def violations(window, inputs, options):
        return SignalResult("data_quality", "alert", value=2, threshold=0, direction="above", rows=window.rows)

    checks = {**CHECKS, "data_quality": violations, "bias_drift": lambda *a: None}
    records = captures(churn_frame(100, seed=7))
    result = run_job(
        "churn", {"1": (inputs(reference), records, NO_LABELS)}, JobOptions(window_rows=100), checks=checks
    )
    assert set(result.windows[0].results) == {"feature_drift", "data_quality"}
    (event,) = result.events("kfloop/monitor")
    signal = read_signal(event)  # the trigger takes it as it takes the live path's
    assert (signal.signal, signal.is_drift, signal.value, signal.direction) == ("data_quality", True, 2, "above")


def test_events_are_the_live_paths_and_their_ids_repeat_for_the_same_rows(reference):
    shifted = churn_frame(300, seed=8).assign(tenure=lambda f: f["tenure"] + 30)
    records = captures(shifted, confidence=0.6)
    frame = labeled(records, right=150)
    version = inputs(reference, quality_threshold=0.7, estimated_threshold=0.8)
    job = lambda: run_job("churn", {"1": (version, records, frame)}, JobOptions(window_rows=300))  # noqa: E731
    events = job().events("kfloop/monitor/churn")
    assert [e["type"] for e in events] == [DRIFT_DETECTED, QUALITY_DEGRADED, ESTIMATED_QUALITY_DROPPED]
    drift = events[0]["data"]
    assert drift["data"]["is_drift"] == 1 and drift["data"]["window_index"] == 0
    assert set(drift["data"]["p_val_by_feature"]) == {"tenure", "charges", "plan"} and drift["model_version"] == "1"
    assert events[1]["data"]["metric"] == "accuracy" and events[1]["data"]["value"] == 0.5
    assert [read_signal(e).signal for e in events] == ["feature_drift", "quality", "estimated_quality"]
    assert [e["id"] for e in job().events("kfloop/monitor/churn")] == [e["id"] for e in events]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"window_rows": 0}, "window_rows is 0"),
        ({"min_rows": 600}, "min_rows 600 is more than window_rows 500"),
        ({"checks": ("vibes",)}, "unknown monitoring checks"),
    ],
)
def test_bad_options_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        JobOptions(**fields)


def test_every_registered_check_is_a_signal():
    assert set(CHECKS) <= set(SIGNALS)


def test_the_bundle_signals_run_in_the_job_and_are_absent_without_their_baselines():
    """With a real churn booster, its attribution baseline, calibrated estimator and drift reference rows
    (what ``kfloop.steps.monitor`` loads from a bundle), a change of which features matter alerts
    attribution drift, a joint shift alerts the domain classifier, and the estimate is CBPE's."""
    from kfloop.monitoring import constraints
    from kfloop.monitoring.attribution import attribution_baseline
    from kfloop.monitoring.estimation import fit_estimator
    from kfloop.training import booster as xgb
    from kfloop.training.samples import churn
    from tests.fakes.churn_model import churn_model

    m = churn_model()
    valid = m.schema.encode_frame(m.valid)
    extra = {
        "booster": m.booster,
        "reference_rows": m.schema.encode_frame(m.train),
        "attribution": attribution_baseline(m.booster, m.schema, valid),
        "estimator": fit_estimator(m.booster, m.schema, m.valid),
        "constraints": constraints.compute(
            m.schema,
            m.schema.encode_frame(m.train),
            xgb.predict(m.booster, m.schema, valid),
            prediction_rows="validation",
        ),
    }
    base = VersionInputs("churn", "1", m.schema, None, extra=extra)

    def job(frame: pd.DataFrame, inputs: VersionInputs) -> dict:
        proba = xgb.predict(m.booster, m.schema, m.schema.encode_frame(frame))
        records = [
            capture_record("churn", "1", {k: (None if pd.isna(v) else v) for k, v in row.items()}, list(p),
                           request_id=f"r{i}", capture_id=f"r{i}", time=f"2026-05-01T00:00:{i % 60:02d}.000000Z")
            for i, (row, p) in enumerate(zip(frame.drop(columns=[m.schema.target]).to_dict("records"), proba))
        ]  # fmt: skip
        result = run_job("churn", {"1": (inputs, records, NO_LABELS)}, JobOptions(window_rows=500))
        (window,) = result.windows
        return window.results

    clean = job(churn(500, seed=11), base)
    assert {s: r.status for s, r in clean.items()} == {
        "data_quality": "ok", "prediction_drift": "ok", "multivariate_drift": "ok", "attribution_drift": "ok",
        "estimated_quality": "ok",
    }  # fmt: skip
    assert clean["estimated_quality"].evidence["estimated"]  # the calibrated estimate, not the mean confidence
    assert job(churn(500, seed=12, attribution_shift=1.0), base)["attribution_drift"].status == "alert"
    assert job(churn(500, seed=13, joint_shift=1.0), base)["multivariate_drift"].status == "alert"
    spoiled = job(churn(500, seed=14, missing_rate=0.1), base)["data_quality"]
    assert spoiled.status == "alert" and {v["feature"] for v in spoiled.evidence["violations"]} >= {"monthly_charges"}
    assert job(churn(500, seed=15, contract_shift=0.5), base)["prediction_drift"].status == "alert"
    bare = job(churn(500, seed=11), VersionInputs("churn", "1", m.schema, None, extra={"booster": m.booster}))
    assert bare == {}  # no baselines, no thresholds: every signal is absent, none is zero

"""The data_quality signal on sample:churn traffic: each injected problem (missing values, a unit
change, an unseen category, rejected requests) is a violation naming its feature and check; clean
windows stay quiet; small windows are insufficient, not verdicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kfloop.monitoring.data_quality import check_data_quality
from tests.fakes.quality import churn_model

WINDOW = 200


def violations(result) -> set[tuple[str, str]]:
    return {(v["feature"], v["check"]) for v in result.evidence["violations"]}


@pytest.mark.parametrize(
    "knobs, expected",
    [
        ({"missing_rate": 0.2}, {("monthly_charges", "missing_rate"), ("contract", "missing_rate")}),
        ({"charges_scale": 10.0}, {("monthly_charges", "out_of_range"), ("total_charges", "out_of_range")}),
        ({"unseen_rate": 0.05}, {("payment_method", "unseen_categories")}),
    ],
    ids=["missing", "unit-change", "unseen-category"],
)
def test_each_injected_problem_is_a_violation_of_its_own_check(knobs, expected):
    model = churn_model()
    decoded, _ = model.window(WINDOW, seed=11, **knobs)
    result = check_data_quality(model.baseline, decoded.X, decoded.unseen)
    assert result.status == "alert" and result.event_type == "io.kfloop.data_quality.violated"
    assert violations(result) == expected
    assert result.value == len(expected) and result.threshold == 0 and result.direction == "above"
    assert result.evidence["violated_features"] == sorted({f for f, _ in expected})


def test_the_evidence_says_how_far_off_the_window_is():
    model = churn_model()
    decoded, _ = model.window(WINDOW, seed=12, charges_scale=10.0, missing_rate=0.2)
    result = check_data_quality(model.baseline, decoded.X, decoded.unseen)
    by_key = {(v["feature"], v["check"]): v for v in result.evidence["violations"]}
    monthly = by_key["monthly_charges", "out_of_range"]
    low, high = monthly["range"]
    assert monthly["window_max"] > 5 * high and monthly["above"] == monthly["count"]
    missing = by_key["monthly_charges", "missing_rate"]
    assert missing["share"] == pytest.approx(0.2, abs=0.07) and missing["training_rate"] == 0
    assert missing["limit"] == pytest.approx(0.05)
    # unseen categories are counted apart from missing ones
    decoded, _ = model.window(WINDOW, seed=12, unseen_rate=0.3)
    result = check_data_quality(model.baseline, decoded.X, decoded.unseen)
    assert result.evidence["missing_rates"]["payment_method"] == 0
    assert violations(result) == {("payment_method", "unseen_categories")}


def test_requests_rejected_for_bad_types_count_against_the_window():
    model = churn_model()
    decoded, _ = model.window(WINDOW, seed=13)
    assert check_data_quality(model.baseline, decoded.X, decoded.unseen, rejected_requests=2).status == "ok"
    result = check_data_quality(model.baseline, decoded.X, decoded.unseen, rejected_requests=10)
    assert violations(result) == {("", "rejected_requests")}
    assert result.evidence["rejected_requests"] == 10


def test_clean_windows_stay_quiet():
    """100 clean windows of 200 rows: no violation (measured: 0 of 100, also at 100 and 500 rows)."""
    model = churn_model()
    alerts = []
    for seed in range(1000, 1100):
        decoded, _ = model.window(WINDOW, seed=seed)
        result = check_data_quality(model.baseline, decoded.X, decoded.unseen)
        assert result.status != "insufficient"
        if result.alerting:
            alerts.append(result.evidence["violations"])
    assert len(alerts) <= 1, alerts


def test_small_windows_are_insufficient_and_chance_is_not_a_violation():
    model = churn_model()
    decoded, _ = model.window(49, seed=14, charges_scale=10.0)
    result = check_data_quality(model.baseline, decoded.X, decoded.unseen)
    assert result.status == "insufficient" and not result.alerting
    assert "49 rows in the window" in result.reason and "at least 50" in result.reason
    # at 50 rows one value past the training range (2% > the 1% tolerance) is chance, two are not
    decoded, _ = model.window(50, seed=14)
    j = model.schema.names.index("age")
    top = {f.name: f for f in model.baseline.features}["age"].max
    X = decoded.X.copy()
    X[0, j] = top + 1
    assert check_data_quality(model.baseline, X).status == "ok"
    X[1, j] = top + 2
    assert violations(check_data_quality(model.baseline, X)) == {("age", "out_of_range")}


def test_a_feature_missing_in_training_tolerates_its_own_rate():
    model = churn_model()
    features = tuple(
        dataclasses.replace(f, missing_rate=0.3, max_missing_rate=0.35) if f.name == "age" else f
        for f in model.baseline.features
    )
    baseline = dataclasses.replace(model.baseline, features=features)
    decoded, _ = model.window(WINDOW, seed=15)
    X = decoded.X.copy()
    j = model.schema.names.index("age")
    rng = np.random.default_rng(0)
    X[rng.random(WINDOW) < 0.33, j] = np.nan  # a little above the training rate: chance
    assert check_data_quality(baseline, X).status == "ok"
    X[rng.random(WINDOW) < 0.5, j] = np.nan  # most of the window: a violation
    assert violations(check_data_quality(baseline, X)) == {("age", "missing_rate")}

"""The prediction_drift signal: windows whose predictions moved (customers switched to month-to-month
contracts, which the model answers with more churn) alert; clean windows rarely do; small windows
are insufficient; regression and multiclass predictions are compared per output."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from kfloop.errors import ConfigError
from kfloop.monitoring import constraints
from kfloop.monitoring.prediction_drift import check_prediction_drift, ks_test, psi
from kfloop.schema import infer_schema
from tests.fakes.datasets import multiclass_data, regression_data
from tests.fakes.quality import churn_model

WINDOW = 200


def test_a_shift_of_the_predictions_alerts():
    model = churn_model()
    _, predictions = model.window(WINDOW, seed=21, contract_shift=1.0)
    result = check_prediction_drift(model.baseline, predictions.tolist())
    assert result.status == "alert" and result.event_type == "io.kfloop.prediction_drift.detected"
    assert result.value < 1e-4 and result.threshold == 0.01 and result.direction == "below"
    output = result.evidence["outputs"]["1"]
    assert output["window_mean"] > output["training_mean"] + 0.05
    assert output["psi"] > 0.1 and result.evidence["drifted_outputs"] == ["1"]
    assert result.evidence["test"] == "ks"


def test_clean_windows_rarely_alert():
    """100 clean windows of 200 rows at p < 0.01: about 1 false alarm expected (measured: 1)."""
    model = churn_model()
    alerts = 0
    for seed in range(2000, 2100):
        _, predictions = model.window(WINDOW, seed=seed)
        result = check_prediction_drift(model.baseline, predictions)
        assert result.status != "insufficient"
        alerts += result.alerting
    assert alerts <= 3


def test_too_few_predictions_are_insufficient():
    model = churn_model()
    _, predictions = model.window(30, seed=22, contract_shift=1.0)
    result = check_prediction_drift(model.baseline, predictions)
    assert result.status == "insufficient" and result.value is None
    assert "30 predictions" in result.reason


def test_regression_values_and_multiclass_probabilities():
    rng = np.random.default_rng(0)
    frame = regression_data()
    schema = infer_schema(frame, "target")
    baseline = constraints.compute(schema, schema.encode_frame(frame), rng.normal(50, 5, len(frame)))
    assert check_prediction_drift(baseline, rng.normal(50, 5, 300)).status == "ok"
    moved = check_prediction_drift(baseline, rng.normal(53, 5, 300))
    assert moved.alerting and moved.evidence["outputs"]["value"]["window_mean"] > 52

    frame = multiclass_data()
    schema = infer_schema(frame, "species")
    reference = rng.dirichlet([4, 2, 2], len(frame))
    baseline = constraints.compute(schema, schema.encode_frame(frame), reference)
    same = check_prediction_drift(baseline, rng.dirichlet([4, 2, 2], 300))
    assert same.status == "ok" and set(same.evidence["outputs"]) == {"a", "b", "c"}
    moved = check_prediction_drift(baseline, rng.dirichlet([2, 2, 4], 300))
    assert moved.alerting and "c" in moved.evidence["drifted_outputs"]
    with pytest.raises(ConfigError, match="3 class probabilities per row"):
        check_prediction_drift(baseline, np.ones((300, 2)))


def test_p_values_are_bonferroni_corrected_over_outputs():
    rng = np.random.default_rng(1)
    frame = multiclass_data()
    schema = infer_schema(frame, "species")
    baseline = constraints.compute(schema, schema.encode_frame(frame), rng.dirichlet([3, 3, 3], len(frame)))
    window = rng.dirichlet([3, 3, 3], 300)
    result = check_prediction_drift(baseline, window)
    raw = [ks_2samp(baseline.prediction_sample[:, i], window[:, i]).pvalue for i in range(3)]
    assert result.value == pytest.approx(min(1.0, 3 * min(raw)))


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=5000)
    assert psi(reference, rng.normal(size=5000)) < 0.01
    assert psi(reference, rng.normal(1.0, 1.0, 5000)) > 0.25


def test_binary_answers_of_the_positive_class_alone_are_accepted():
    """KServe's stock xgbserver answers P(classes[1]) per row, not both probabilities."""
    model = churn_model()
    _, predictions = model.window(WINDOW, seed=23, contract_shift=1.0)
    both = check_prediction_drift(model.baseline, predictions)
    alone = check_prediction_drift(model.baseline, predictions[:, 1].tolist())
    assert alone.alerting and alone.value == pytest.approx(both.value)


def test_a_model_with_few_distinct_outputs_does_not_alert_on_its_own_distribution():
    """The baseline keeps predictions rounded to 6 decimals; the window is compared at the same
    precision, so a coarse model (a few distinct scores, unrounded float32) is not flagged against itself."""
    rng = np.random.default_rng(3)
    frame = regression_data()
    schema = infer_schema(frame, "target")
    levels = np.float32([10.123456789, 20.987654321, 35.55555555])
    baseline = constraints.compute(schema, schema.encode_frame(frame), rng.choice(levels, len(frame)))
    same = check_prediction_drift(baseline, rng.choice(levels, 300).tolist())
    assert same.status == "ok", same.value
    assert check_prediction_drift(baseline, rng.choice(levels[:2], 300).tolist()).alerting


def test_ks_test_answers_what_ks_2samp_does_first_time_and_remembered():
    rng = np.random.default_rng(3)
    reference = rng.beta(2, 5, 2000)
    windows = [rng.beta(2, 5, 500) for _ in range(20)] + [rng.beta(3, 5, 500), np.round(rng.random(500), 1)]
    windows += [rng.beta(2, 5, 37), np.full(500, 0.5)]  # another window size; every value tied
    for live in windows + windows:  # the second time from what was remembered
        expected = ks_2samp(reference, live)
        assert ks_test(reference, live) == (float(expected.statistic), float(expected.pvalue))


def test_the_reference_prepared_once_gives_the_same_statistics_as_computed_fresh():
    import scipy.stats

    from kfloop.monitoring.prediction_drift import Reference, ks_test, psi

    rng = np.random.default_rng(11)
    reference = rng.beta(2, 5, 3000).round(6)
    prepared = Reference.of(reference)
    for shift in (0.0, 0.02, 0.1):
        live = np.clip(rng.beta(2, 5, 500) + shift, 0, 1).round(6)
        assert ks_test(prepared, live) == ks_test(reference, live)
        statistic, p_value = ks_test(prepared, live)
        exact = scipy.stats.ks_2samp(reference, live)
        assert statistic == exact.statistic and abs(p_value - exact.pvalue) < 1e-12
        assert psi(prepared, live) == psi(reference, live)
    assert prepared.mean == round(float(reference.mean()), 6)
    assert prepared.quantiles == [round(float(q), 6) for q in np.quantile(reference, (0.05, 0.5, 0.95))]

"""Canary analysis, the pure part: plans, thresholds, divergence measures and the step verdict."""

from __future__ import annotations

import numpy as np
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.rollout.analysis import AnalysisPlan, RevisionStats, Thresholds, compare, plan_for, summarize
from kfloop.rollout.divergence import js_distance, ks_statistic, prediction_divergence

RNG = np.random.default_rng(0)


def probabilities(n: int, a: float = 2.0, b: float = 2.0, seed: int = 0) -> list[list[float]]:
    p = np.random.default_rng(seed).beta(a, b, n)
    return np.column_stack([1 - p, p]).tolist()


def stats(version=1, requests=1000, errors=0, p99=20.0, predictions=None, quality=None) -> RevisionStats:
    return RevisionStats(
        version,
        requests,
        errors,
        p99,
        probabilities(400, seed=version) if predictions is None else predictions,
        quality,
    )


def by_metric(verdict) -> dict:
    return {c["metric"]: c for c in verdict.checks}


# -- plans ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, kwargs, steps",
    [
        ("canary", {}, (10, 50, 100)),
        ("canary", {"steps": [5, 20]}, (5, 20, 100)),
        ("canary", {"steps": [1, 100]}, (1, 100)),
        ("linear", {}, (25, 50, 75, 100)),
        ("linear", {"n_steps": 3}, (33, 67, 100)),
        ("linear", {"n_steps": 1}, (100,)),
        ("all-at-once", {}, (100,)),
        ("blue-green", {}, (0, 100)),
    ],
)
def test_plan_steps(strategy, kwargs, steps):
    plan = plan_for(strategy, **kwargs)
    assert plan.steps == steps and plan.strategy == strategy
    assert plan.shadow == (strategy == "blue-green")


def test_plan_holds_by_requests_or_seconds_whichever_first():
    both = plan_for("canary", hold_requests=100, hold_seconds=30)
    assert not both.held(99, 29.9) and both.held(100, 0) and both.held(0, 30)
    by_time = plan_for("canary", hold_seconds=30)
    assert by_time.hold_requests is None and not by_time.held(10_000, 29) and by_time.held(0, 30)
    assert plan_for("canary").hold_requests == 200  # the default


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "rainbow"}, "is not one of"),
        ({"steps": (50, 10, 100)}, "increasing"),
        ({"steps": (10, 50)}, "ending at 100"),
        ({"steps": (10, 150)}, "ending at 100"),
        ({"hold_requests": None, "hold_seconds": None}, "hold_requests or hold_seconds"),
        ({"hold_requests": 0}, "positive"),
        ({"timeout_seconds": 0}, "positive"),
    ],
)
def test_bad_plans_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AnalysisPlan(**kwargs)


def test_thresholds_parse_names_and_short_forms():
    t = Thresholds.parse("error_rate=0.02, p99_ratio=2,max_divergence=0.3,min_requests=10")
    assert (t.max_error_rate_increase, t.max_p99_ratio, t.max_divergence, t.min_requests) == (0.02, 2.0, 0.3, 10)
    assert t.max_quality_drop == Thresholds().max_quality_drop and Thresholds.parse(None) == Thresholds()
    for bad in ("speed=3", "error_rate", "error_rate=fast", "min_requests=-1"):
        with pytest.raises(ConfigError, match="threshold"):
            Thresholds.parse(bad)


# -- divergence ------------------------------------------------------------------------------------


def test_js_distance_is_small_for_one_distribution_and_one_for_disjoint_ones():
    same = js_distance(RNG.beta(2, 2, 2000), RNG.beta(2, 2, 2000))
    assert same < 0.08
    assert js_distance(RNG.uniform(0, 0.1, 100), RNG.uniform(0.9, 1.0, 100)) == pytest.approx(1.0)
    assert 0.3 < js_distance(RNG.beta(2, 5, 2000), RNG.beta(5, 2, 2000)) < 1.0


def test_ks_statistic_matches_the_empirical_distribution_gap():
    assert ks_statistic([1, 2, 3, 4], [1, 2, 3, 4]) == 0
    assert ks_statistic([1, 2, 3, 4], [5, 6, 7, 8]) == 1
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)


def test_prediction_divergence_picks_the_measure_and_refuses_mixed_outputs():
    value, measure = prediction_divergence(probabilities(500, seed=1), probabilities(500, 8, 1, seed=2))
    assert measure == "js_distance" and value > 0.5
    three = RNG.dirichlet([1, 1, 1], 300).tolist()
    shifted = RNG.dirichlet([8, 1, 1], 300).tolist()
    assert (
        prediction_divergence(three, shifted)[0]
        > prediction_divergence(three, RNG.dirichlet([1, 1, 1], 300).tolist())[0]
    )
    assert prediction_divergence(list(RNG.normal(0, 1, 300)), list(RNG.normal(3, 1, 300)))[1] == "ks_statistic"
    with pytest.raises(DataError, match="not comparable"):
        prediction_divergence(probabilities(10), [0.5] * 10)
    with pytest.raises(DataError, match="2 classes, canary 3"):
        prediction_divergence(probabilities(10), three[:10])


# -- the verdict -----------------------------------------------------------------------------------


def test_a_canary_like_stable_passes_every_check_and_reports_its_evidence():
    verdict = compare(stats(1), stats(2), Thresholds())
    checks = by_metric(verdict)
    assert verdict.passed and not verdict.failed and not verdict.insufficient
    assert [c["passed"] for c in checks.values()] == [True, True, True, True, None]
    assert checks["quality"]["skipped"] and "labeled rows" in checks["quality"]["note"]
    assert "skipped: quality" in verdict.reason
    for check in verdict.checks:
        assert {"metric", "stable", "canary", "threshold", "passed"} <= set(check)
    assert "quality skipped" in summarize(verdict) and "error_rate 0.0 vs 0.0" in summarize(verdict)


@pytest.mark.parametrize(
    "canary, failing",
    [
        (stats(2, errors=30), "error_rate"),
        (stats(2, p99=45.0), "p99_latency_ms"),
        (stats(2, predictions=probabilities(400, 9, 1, seed=3)), "prediction_divergence"),
        (stats(2, quality={"metric": "accuracy", "value": 0.70, "n": 100}), "quality"),
    ],
)
def test_each_check_can_fail_the_step(canary, failing):
    stable = stats(1, quality={"metric": "accuracy", "value": 0.80, "n": 100})
    verdict = compare(stable, canary, Thresholds())
    assert not verdict.passed and verdict.failed == [failing]
    assert by_metric(verdict)[failing]["passed"] is False and failing in verdict.reason


def test_error_rate_and_latency_limits_are_relative_to_stable():
    t = Thresholds(max_error_rate_increase=0.01, max_p99_ratio=1.5, p99_slack_ms=10)
    assert compare(stats(1, errors=50), stats(2, errors=59), t).passed  # 5.0% -> 5.9%
    assert not compare(stats(1, errors=50), stats(2, errors=61), t).passed
    assert compare(stats(1, p99=4.0), stats(2, p99=13.9), t).passed  # within the slack: 3x a few ms is noise
    assert compare(stats(1, p99=100.0), stats(2, p99=149.0), t).passed
    assert not compare(stats(1, p99=100.0), stats(2, p99=151.0), t).passed


def test_quality_of_an_error_metric_fails_when_it_grows():
    rmse = {"metric": "rmse", "value": 10.0, "n": 50}
    worse = compare(stats(1, quality=rmse), stats(2, quality={**rmse, "value": 11.0}), Thresholds())
    assert by_metric(worse)["quality"]["passed"] is False
    better = compare(stats(1, quality=rmse), stats(2, quality={**rmse, "value": 9.0}), Thresholds())
    assert better.passed and by_metric(better)["quality"]["relative_drop"] == pytest.approx(-0.1)


def test_too_little_traffic_is_insufficient_not_passed_and_skips_the_traffic_checks():
    verdict = compare(stats(1), stats(2, requests=12), Thresholds(min_requests=50))
    checks = by_metric(verdict)
    assert not verdict.passed and verdict.insufficient and not verdict.failed
    assert checks["requests"] == {"metric": "requests", "stable": 1000, "canary": 12, "threshold": 50, "passed": False}
    assert checks["error_rate"]["skipped"] and checks["p99_latency_ms"]["skipped"]
    assert "not enough traffic" in verdict.reason


def test_a_failure_is_reported_even_before_there_is_enough_traffic():
    verdict = compare(stats(1), stats(2, requests=20, predictions=probabilities(400, 9, 1)), Thresholds())
    assert not verdict.passed and not verdict.insufficient and verdict.failed == ["prediction_divergence"]


def test_missing_predictions_are_skipped_and_pending_while_the_canary_serves():
    verdict = compare(stats(1), stats(2, predictions=probabilities(20)), Thresholds(min_predictions=200))
    check = by_metric(verdict)["prediction_divergence"]
    assert verdict.passed and check["skipped"] and check["passed"] is None and verdict.waiting_for_predictions
    assert "20 canary predictions" in check["note"]
    idle = compare(stats(1), stats(2, requests=0, predictions=[]), Thresholds(min_requests=0))
    assert idle.insufficient
    assert not idle.waiting_for_predictions


def test_incomparable_predictions_fail_the_check_with_the_reason():
    verdict = compare(stats(1), stats(2, predictions=[0.3] * 400), Thresholds())
    check = by_metric(verdict)["prediction_divergence"]
    assert check["passed"] is False and "not comparable" in check["note"]

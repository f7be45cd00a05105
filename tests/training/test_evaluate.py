"""Evaluation metrics against scikit-learn, and the quality gate's decision table (kfloop.training.evaluate)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kfloop.errors import ConfigError
from kfloop.schema import Feature, FeatureSchema
from kfloop.training.evaluate import (
    AUTO_THRESHOLD,
    PRIMARY_METRIC,
    THRESHOLD_MEANING,
    NaiveBaseline,
    compute_metrics,
    decide_gate,
    higher_is_better,
    naive_baseline,
    roc_curve,
    skill,
)

FEATURES = (Feature("x", "numeric"),)
BINARY = FeatureSchema("y", "binary", FEATURES, ("no", "yes"))
MULTI = FeatureSchema("y", "multiclass", FEATURES, ("a", "b", "c"))
REGRESSION = FeatureSchema("y", "regression", FEATURES)


def test_binary_metrics_match_sklearn():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    p1 = np.array([0.1, 0.6, 0.7, 0.4, 0.2, 0.9, 0.8, 0.3])
    m = compute_metrics(BINARY, y, np.column_stack([1 - p1, p1]))
    labels = (p1 > 0.5).astype(int)  # 1 false positive (0.6), 1 false negative (0.4)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["f1"] == pytest.approx(skm.f1_score(y, labels)) == pytest.approx(0.75)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p1))
    assert m["confusion_matrix"] == [[3, 1], [1, 3]] and m["labels"] == ["no", "yes"]
    assert m["n"] == 8
    fpr, tpr, _ = skm.roc_curve(y, p1)
    assert m["roc"]["fpr"] == pytest.approx(fpr.tolist()) and m["roc"]["tpr"] == pytest.approx(tpr.tolist())
    assert max(m["roc"]["thresholds"]) <= 1.0
    json.dumps(m, allow_nan=False)  # plain JSON: no inf or NaN
    assert all(type(m[k]) is float for k in ("auc", "accuracy", "f1", "log_loss"))


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=60)
    proba = rng.dirichlet([1, 1, 1], size=60)
    proba[np.arange(60), y] += 0.5  # informative but imperfect
    proba /= proba.sum(axis=1, keepdims=True)
    m = compute_metrics(MULTI, y, proba)
    labels = proba.argmax(axis=1)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
    assert m["f1"] == pytest.approx(skm.f1_score(y, labels, average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, labels).tolist()
    assert "roc" not in m


def test_multiclass_auc_skips_classes_absent_from_the_data():
    y = np.array([0, 0, 1, 1])  # class 2 never occurs
    proba = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    m = compute_metrics(MULTI, y, proba)
    # class 0 vs rest: scores 0.8, 0.3 (pos) vs 0.2, 0.5 (neg): pairs won 0.8>0.2, 0.8>0.5, 0.3>0.2 -> 3/4
    # class 1 vs rest: scores 0.7, 0.4 (pos) vs 0.1, 0.6 (neg): 0.7>0.1, 0.7>0.6, 0.4>0.1 -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    assert m["confusion_matrix"][2] == [0, 0, 0]


def test_auc_is_none_when_only_one_class_is_present():
    m = compute_metrics(BINARY, np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]))
    assert m["auc"] is None and m["roc"] is None
    json.dumps(m, allow_nan=False)


def test_regression_metrics_match_sklearn():
    y = np.array([3.0, -0.5, 2.0, 7.0])
    pred = np.array([2.5, 0.0, 2.0, 8.0])
    m = compute_metrics(REGRESSION, y, pred)
    # squared errors 0.25, 0.25, 0, 1 -> mean 0.375; absolute errors 0.5, 0.5, 0, 1 -> mean 0.5
    assert m["rmse"] == pytest.approx(math.sqrt(0.375))
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert m["n"] == 4


def test_roc_is_downsampled_keeping_both_ends():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=5000)
    score = rng.random(5000) + 0.3 * y
    roc = roc_curve(y, score, max_points=50)
    assert 2 < len(roc["fpr"]) <= 50 == len(roc["tpr"]) == len(roc["thresholds"])
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0) and (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0)


def test_primary_metrics_and_their_direction():
    assert PRIMARY_METRIC == {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
    assert higher_is_better("auc") and higher_is_better("accuracy") and not higher_is_better("rmse")
    with pytest.raises(ConfigError, match="bogus"):
        higher_is_better("bogus")


@pytest.mark.parametrize(
    "task, candidate, production, threshold, tolerance, passed, reason",
    [
        ("binary", 0.70, None, 0.75, 0.0, False, "threshold failed: candidate auc 0.7 is not >= 0.75"),
        ("binary", 0.80, 0.90, 0.75, 0.05, False, "worse than production 0.9 by 0.1, more than the tolerance 0.05"),
        ("binary", 0.86, 0.90, 0.75, 0.05, True, "within tolerance of production 0.9"),
        ("binary", 0.80, None, 0.75, 0.0, True, "no production auc to compare with"),
        ("binary", 0.70, 0.90, 0.75, 0.01, False, "threshold failed"),
        ("multiclass", 0.60, 0.55, 0.5, 0.0, True, "meets the threshold 0.5"),
        ("regression", 1.2, None, 1.5, 0.0, True, "meets the threshold 1.5"),
        ("regression", 1.6, None, 1.5, 0.0, False, "candidate rmse 1.6 is not <= 1.5 (set: the maximum test RMSE)"),
        ("regression", 1.4, 1.0, 1.5, 0.3, False, "worse than production 1 by 0.4"),
        ("regression", 1.2, 1.0, 1.5, 0.3, True, "within tolerance"),
    ],
)
def test_gate_decision_table_with_a_set_threshold(task, candidate, production, threshold, tolerance, passed, reason):
    metric = PRIMARY_METRIC[task]
    prod = None if production is None else {metric: production}
    baseline = {
        "binary": None,
        "multiclass": NaiveBaseline("accuracy", 0.4, "m"),
        "regression": NaiveBaseline("rmse", 3.0, "r"),
    }
    decision = decide_gate(task, {metric: candidate}, prod, threshold, tolerance, baseline[task])
    assert decision.passed is passed
    assert reason in decision.reason
    assert decision.to_dict() == {
        "passed": passed,
        "metric": metric,
        "candidate": candidate,
        "production": production,
        "threshold": threshold,
        "threshold_rule": f"set: {THRESHOLD_MEANING[task]}",
        "baseline": {"binary": 0.5, "multiclass": 0.4, "regression": 3.0}[task],
        "baseline_rule": {"binary": "a constant score", "multiclass": "m", "regression": "r"}[task],
        "tolerance": tolerance,
        "reason": decision.reason,
    }


@pytest.mark.parametrize(
    "task, baseline, candidate, passed, applied",
    [
        # binary: the constant score's AUC 0.5; 10% less loss (1 - AUC) -> AUC >= 0.55 (Gini >= 0.1)
        ("binary", None, 0.56, True, 0.55),
        ("binary", None, 0.54, False, 0.55),
        # multiclass: majority accuracy 0.6 (error 0.4); 10% less error -> accuracy >= 0.64
        ("multiclass", NaiveBaseline("accuracy", 0.6, "always 'a'"), 0.65, True, 0.64),
        ("multiclass", NaiveBaseline("accuracy", 0.6, "always 'a'"), 0.63, False, 0.64),
        # regression: the training mean's RMSE 10; 10% less -> RMSE <= 9
        ("regression", NaiveBaseline("rmse", 10.0, "the mean"), 8.9, True, 9.0),
        ("regression", NaiveBaseline("rmse", 10.0, "the mean"), 9.5, False, 9.0),
    ],
)
def test_the_automatic_threshold_is_ten_percent_better_than_the_naive_baseline(
    task, baseline, candidate, passed, applied
):
    metric = PRIMARY_METRIC[task]
    decision = decide_gate(task, {metric: candidate}, None, AUTO_THRESHOLD, 0.01, baseline)
    assert decision.passed is passed, decision.reason
    assert decision.threshold == pytest.approx(applied)
    assert decision.threshold_rule.startswith("auto:")
    expected = "meets the threshold" if passed else "threshold failed"
    assert expected in decision.reason and "(auto:" in decision.reason


@pytest.mark.parametrize(
    "task, baseline, candidate",
    [
        ("binary", None, 0.5),
        ("binary", None, 0.3),
        ("multiclass", NaiveBaseline("accuracy", 0.6, "always the training majority class 'a'"), 0.6),
        ("regression", NaiveBaseline("rmse", 10.0, "predicting the training mean 3"), 10.5),
    ],
)
@pytest.mark.parametrize("threshold", [AUTO_THRESHOLD, 0.0, 100.0])
def test_a_candidate_no_better_than_the_naive_baseline_is_refused_whatever_the_threshold(
    task, baseline, candidate, threshold
):
    metric = PRIMARY_METRIC[task]
    if threshold == 100.0 and metric != "rmse":
        threshold = 0.0  # a set threshold the candidate meets: the baseline still refuses it
    decision = decide_gate(task, {metric: candidate}, None, threshold, 0.0, baseline)
    assert not decision.passed
    assert "no better than the naive baseline" in decision.reason
    rule = baseline.rule if baseline else "a constant score"
    assert rule in decision.reason


def test_a_perfect_naive_baseline_leaves_nothing_to_beat():
    decision = decide_gate(
        "multiclass", {"accuracy": 1.0}, None, AUTO_THRESHOLD, 0.0, NaiveBaseline("accuracy", 1.0, "a")
    )
    assert not decision.passed and "already perfect" in decision.reason


def test_skill_is_gini_for_auc_and_relative_rmse_for_regression():
    assert skill("auc", 0.8, 0.5) == pytest.approx(2 * 0.8 - 1)
    assert skill("rmse", 6.0, 8.0) == pytest.approx(0.25)
    assert skill("accuracy", 0.7, 0.5) == pytest.approx(0.4)
    assert skill("rmse", 1.0, 0.0) is None


def test_naive_baselines_from_training_labels():
    y_train, y_test = np.array([1.0, 2.0, 3.0, 6.0]), np.array([2.0, 4.0])  # training mean 3
    base = naive_baseline(REGRESSION, y_train, y_test)
    assert (base.metric, base.value) == ("rmse", pytest.approx(1.0)) and "training mean 3" in base.rule
    base = naive_baseline(MULTI, np.array([2, 2, 1, 0, 2]), np.array([2, 0, 0, 2, 1]))
    assert (base.metric, base.value) == ("accuracy", pytest.approx(0.4)) and "'c'" in base.rule
    base = naive_baseline(BINARY, np.array([0, 0, 1]), np.array([1, 1]))
    assert (base.metric, base.value) == ("auc", 0.5) and "'no'" in base.rule


def test_gate_reports_both_failures():
    decision = decide_gate("binary", {"auc": 0.6}, {"auc": 0.9}, 0.75, 0.01)
    assert "threshold failed" in decision.reason and "worse than production" in decision.reason


def test_gate_fails_when_the_candidate_metric_is_undefined():
    decision = decide_gate("binary", {"auc": None}, None, 0.5, 0.0)
    assert not decision.passed and "undefined" in decision.reason


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tolerance": -0.01}, "tolerance"),
        ({"threshold": float("nan")}, "threshold"),
        ({"task": "ranking"}, "ranking"),
        ({"threshold": -0.5}, "threshold -0.5 must be >= 0"),
        ({"task": "regression", "threshold": AUTO_THRESHOLD}, "needs the naive baseline"),
    ],
)
def test_gate_rejects_bad_settings(kwargs, match):
    args = {
        "task": "binary",
        "candidate_metrics": {"auc": 0.9},
        "production_metrics": None,
        "threshold": 0.5,
        "tolerance": 0.0,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=match):
        decide_gate(**args)


def test_markdown_report_shows_metrics_gate_bias_and_importance():
    from kfloop.training.bias import bias_report
    from kfloop.training.model_report import render_markdown

    y = np.array([0, 1, 1, 0])
    p1 = np.array([0.2, 0.9, 0.05, 0.1])  # AUC: 2 of 4 positive-negative pairs ordered = 0.5
    metrics = compute_metrics(BINARY, y, np.column_stack([1 - p1, p1]))
    gate = decide_gate("binary", metrics, {"auc": 0.99}, 0.5, 0.0).to_dict()
    bias = bias_report(pd.Series(["u", "v", "u", "v"], name="region"), y == 1, p1 > 0.5)
    importance = {
        "method": "mean_abs_shap",
        "n_rows": 4,
        "features": [{"name": "x|y", "importance": 0.5}, {"name": "z", "importance": 0.25}],
    }
    text = render_markdown(metrics, gate, bias, importance)
    assert "## Quality gate: FAILED" in text and "worse than production 0.99" in text
    assert "| auc | 0.5 |" in text and "| accuracy | 0.75 |" in text
    assert "| no | 2 | 0 |" in text and "| yes | 1 | 1 |" in text  # confusion matrix rows
    assert "### region" in text and "| u | 2 | 2 |" in text and "DI = q'_d / q'_a" in text
    assert "| x\\|y | 0.5 |" in text  # pipes in names are escaped
    assert "roc" not in text.split("## Confusion")[0]  # the curve is not dumped into the metrics table
    no_extras = render_markdown(metrics, gate, None, None)
    assert "## Bias" not in no_extras and "## Feature importance" not in no_extras
    assert "Not computed: regression" in render_markdown(metrics, gate, {"skipped": "regression"}, None)

"""SageMaker Clarify bias metrics on hand-computed examples (kfloop.training.bias)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.training.bias import MISSING, BiasLimits, bias_report, bias_violations

#            row:    0    1    2    3    4     5
SENSITIVE = ["m", "m", "m", "f", "f", None]
Y_TRUE = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
Y_PRED = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
# correct (y_true == y_pred):  T  F  T  F  T  F


def by_group(report: dict) -> dict:
    return {g["group"]: g for g in report["groups"]}


def test_groups_are_sorted_with_missing_last():
    report = bias_report(pd.Series(SENSITIVE, name="sex"), Y_TRUE, Y_PRED)
    assert [g["group"] for g in report["groups"]] == ["f", "m", MISSING]
    assert report["feature"] == "sex" and report["n"] == 6 and report["binned"] is False
    json.dumps(report, allow_nan=False)


def test_facet_f_against_the_rest():
    f = by_group(bias_report(SENSITIVE, Y_TRUE, Y_PRED))["f"]
    # d = rows 3, 4 (n_d = 2); a = rows 0, 1, 2, 5 (n_a = 4)
    assert (f["n_d"], f["n_a"]) == (2, 4)
    # CI = (4 - 2) / (4 + 2) = 1/3
    assert f["class_imbalance"] == pytest.approx(1 / 3)
    # labels: q_d = (1 + 0) / 2 = 0.5, q_a = (1 + 0 + 1 + 0) / 4 = 0.5, DPL = 0.5 - 0.5 = 0
    assert (f["q_d"], f["q_a"]) == (0.5, 0.5) and f["dpl"] == pytest.approx(0.0)
    # predictions: q'_d = (0 + 0) / 2 = 0, q'_a = (1 + 1 + 1 + 1) / 4 = 1, DPPL = 1 - 0 = 1, DI = 0 / 1 = 0
    assert f["dppl"] == pytest.approx(1.0) and f["disparate_impact"] == pytest.approx(0.0)
    # accuracy: acc_d = (F, T) = 1/2, acc_a = (T, F, T, F) = 2/4, AD = 0.5 - 0.5 = 0
    assert f["accuracy_difference"] == pytest.approx(0.0)


def test_facet_m_against_the_rest():
    m = by_group(bias_report(SENSITIVE, Y_TRUE, Y_PRED))["m"]
    # d = rows 0, 1, 2 (n_d = 3); a = rows 3, 4, 5 (n_a = 3); CI = (3 - 3) / 6 = 0
    assert (m["n_d"], m["n_a"]) == (3, 3) and m["class_imbalance"] == pytest.approx(0.0)
    # q_d = (1 + 0 + 1) / 3 = 2/3, q_a = (1 + 0 + 0) / 3 = 1/3, DPL = 1/3 - 2/3 = -1/3
    assert m["dpl"] == pytest.approx(-1 / 3)
    # q'_d = 3/3 = 1, q'_a = (0 + 0 + 1) / 3 = 1/3, DPPL = 1/3 - 1 = -2/3, DI = 1 / (1/3) = 3
    assert m["dppl"] == pytest.approx(-2 / 3) and m["disparate_impact"] == pytest.approx(3.0)
    # acc_d = (T, F, T) = 2/3, acc_a = (F, T, F) = 1/3, AD = 1/3 - 2/3 = -1/3
    assert m["accuracy_difference"] == pytest.approx(-1 / 3)


def test_missing_values_form_their_own_facet():
    missing = by_group(bias_report(SENSITIVE, Y_TRUE, Y_PRED))[MISSING]
    # d = row 5 (n_d = 1); a = rows 0..4 (n_a = 5); CI = (5 - 1) / 6 = 2/3
    assert (missing["n_d"], missing["n_a"]) == (1, 5) and missing["class_imbalance"] == pytest.approx(2 / 3)
    # q_d = 0 / 1 = 0, q_a = (1 + 0 + 1 + 1 + 0) / 5 = 0.6, DPL = 0.6 - 0 = 0.6
    assert missing["dpl"] == pytest.approx(0.6)
    # q'_d = 1 / 1 = 1, q'_a = (1 + 1 + 1 + 0 + 0) / 5 = 0.6, DPPL = 0.6 - 1 = -0.4, DI = 1 / 0.6 = 5/3
    assert missing["dppl"] == pytest.approx(-0.4) and missing["disparate_impact"] == pytest.approx(5 / 3)
    # acc_d = (F) = 0, acc_a = (T, F, T, F, T) = 3/5, AD = 0.6 - 0 = 0.6
    assert missing["accuracy_difference"] == pytest.approx(0.6)


def test_disparate_impact_is_none_when_the_rest_has_no_positive_predictions():
    groups = by_group(bias_report(["x", "x", "y"], [1, 0, 1], [1, 1, 0]))
    # facet x: a = row 2, q'_a = 0 / 1 = 0 -> DI undefined
    assert groups["x"]["disparate_impact"] is None
    # facet y: q'_d = 0 / 1 = 0, q'_a = (1 + 1) / 2 = 1 -> DI = 0
    assert groups["y"]["disparate_impact"] == 0.0


def test_a_single_group_has_no_facet_a():
    (only,) = bias_report(["x", "x"], [1, 0], [1, 1])["groups"]
    # n_a = 0: CI = (0 - 2) / (0 + 2) = -1; metrics that need facet a are undefined
    assert only["class_imbalance"] == -1.0
    assert only["dpl"] is None and only["dppl"] is None and only["disparate_impact"] is None
    assert only["accuracy_difference"] is None


def test_numeric_feature_with_many_values_is_binned_by_quantiles():
    age = np.append(np.arange(100, dtype=float), np.nan)
    y = np.zeros(101, dtype=bool)
    y[:25] = True  # only the first quartile (ages 0..24) is positive
    report = bias_report(pd.Series(age, name="age"), y, y)
    groups = by_group(report)
    # quartile edges of 0..99: 0, 24.75, 49.5, 74.25, 99 -> 25 ages per bin
    assert report["binned"] is True
    assert list(groups) == ["[0, 24.75]", "(24.75, 49.5]", "(49.5, 74.25]", "(74.25, 99]", MISSING]
    first = groups["[0, 24.75]"]
    # n_d = 25, n_a = 76: CI = (76 - 25) / 101; q_d = 25/25 = 1, q_a = 0/76 = 0 -> DPL = -1
    assert (first["n_d"], first["n_a"]) == (25, 76)
    assert first["class_imbalance"] == pytest.approx(51 / 101) and first["dpl"] == -1.0


def test_numeric_feature_with_few_values_keeps_its_values_in_numeric_order():
    report = bias_report(np.array([10, 2, 2, 10, 3]), [1, 0, 1, 0, 1], [1, 0, 1, 0, 1])
    assert [g["group"] for g in report["groups"]] == ["2", "3", "10"] and report["binned"] is False


def test_inputs_of_different_lengths_are_rejected():
    with pytest.raises(DataError, match="differ in length"):
        bias_report(["a", "b"], [1, 0, 1], [1, 0])


def _facets(n_d, pos_d, n_a, pos_a, correct_d=None, correct_a=None):
    """Rows of a facet "d" and a facet "a" with the given predicted positives (and correct rows)."""
    sensitive = ["d"] * n_d + ["a"] * n_a
    y_pred = np.array([1] * pos_d + [0] * (n_d - pos_d) + [1] * pos_a + [0] * (n_a - pos_a), dtype=bool)
    correct = np.ones(n_d + n_a, dtype=bool)
    if correct_d is not None:
        correct[correct_d:n_d] = False
    if correct_a is not None:
        correct[n_d + correct_a :] = False
    return bias_report(pd.Series(sensitive, name="s"), np.where(correct, y_pred, ~y_pred), y_pred)


def test_the_four_fifths_rule_and_the_dppl_limit():
    report = _facets(100, 30, 100, 50)  # DI of d = 0.3 / 0.5 = 0.6, DPPL 0.2
    violations, skipped = bias_violations(report, BiasLimits())
    rules = {(v["group"], v["metric"]) for v in violations}
    assert ("d", "disparate_impact") in rules and ("d", "dppl") in rules
    assert ("a", "disparate_impact") in rules  # the mirror: a's DI 1.67 > 1.25
    assert next(v for v in violations if v["group"] == "d")["rule"] == "group d: four-fifths rule: DI 0.6 < 0.8"
    assert skipped == []
    assert bias_violations(_facets(100, 45, 100, 50), BiasLimits()) == ([], [])  # DI 0.9, DPPL 0.05


def test_small_groups_are_skipped_and_alpha_asks_for_significance():
    assert bias_violations(_facets(10, 1, 300, 150), BiasLimits())[1] == ["a", "d"]  # groups in value order
    # 40 rows: DI 0.75 breaks the four-fifths rule, but a z-test cannot tell 15/40 from 20/40
    report = _facets(40, 15, 40, 20)
    assert bias_violations(report, BiasLimits(min_group_rows=30))[0]
    assert bias_violations(report, BiasLimits(min_group_rows=30, alpha=0.01))[0] == []
    large = _facets(2000, 750, 2000, 1000)  # the same rates on 2,000 rows each are significant
    assert bias_violations(large, BiasLimits(alpha=0.01))[0]


def test_the_accuracy_difference_limit_needs_labels():
    report = _facets(200, 60, 200, 60, correct_d=120, correct_a=180)  # accuracy 0.6 against 0.9
    assert bias_violations(report, BiasLimits())[0] == []  # not checked unless set
    (violation,) = [v for v in bias_violations(report, BiasLimits(max_accuracy_difference=0.1))[0] if v["group"] == "d"]
    assert violation["metric"] == "accuracy_difference" and violation["value"] == pytest.approx(0.3)


def test_fixed_edges_bin_numeric_values():
    ages = pd.Series([20, 35, 59.9, 60, 61, 75, 95, None], name="age")
    report = bias_report(ages, np.zeros(8, bool), np.zeros(8, bool), edges=[18, 60, 90])
    assert {g["group"]: g["n_d"] for g in report["groups"]} == {"[18, 60]": 4, "(60, 90]": 3, MISSING: 1}
    with pytest.raises(ConfigError, match="increasing"):
        bias_report(ages, np.zeros(8, bool), np.zeros(8, bool), edges=[60, 18])


@pytest.mark.parametrize(
    "limits, message",
    [
        ({"max_dppl": -0.1}, "max_dppl=-0.1 must be a finite number >= 0"),
        ({"alpha": 1.5}, "alpha=1.5 must be in \\(0, 1\\)"),
        ({"min_group_rows": 0}, "min_group_rows=0"),
    ],
)
def test_bad_limits_are_refused(limits, message):
    with pytest.raises(ConfigError, match=message):
        BiasLimits(**limits)

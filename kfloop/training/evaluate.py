"""Evaluation metrics and the quality gate that decides whether a candidate model may be registered.

Metrics are plain JSON values (floats, ints, lists; ``None`` where a metric is undefined, such
as AUC on data with one class), ready for ``metrics.json`` and KFP Metrics artifacts.

The gate compares one primary metric per task (``PRIMARY_METRIC``):

- binary: ``auc`` (ROC AUC; threshold-free and insensitive to class balance),
- multiclass: ``accuracy`` (always defined, even when a class is missing from the evaluation
  data, and a threshold on it is easy to read; macro AUC is reported alongside),
- regression: ``rmse`` (lower is better).

Every candidate is also compared with a naive baseline that ignores the features
(``naive_baseline``: the training mean, the training majority class, a constant score): a model no
better than it is refused whatever the threshold. The default threshold (``AUTO_THRESHOLD``) is
derived from that baseline, so the defaults make sense for every task; a threshold that is set has
the meaning ``THRESHOLD_MEANING`` gives per task.

A failed gate is data (``GateDecision.passed``), not an exception.

With a sensitive feature the evaluate step also checks the candidate's bias on the test split
(``decide_bias_gate``: disparate impact within [0.8, 1.25], the four-fifths rule being its lower
bound, and |DPPL| <= 0.1 by default, per group of at least 30 rows); ``bias_action`` says what a
failure does (``BIAS_ACTIONS``: report only, reject, or pending-approval).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn import metrics as skm

from kfloop.errors import ConfigError
from kfloop.schema import TASKS, FeatureSchema

PRIMARY_METRIC = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
HIGHER_IS_BETTER = {
    "auc": True,
    "accuracy": True,
    "f1": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}
MAX_ROC_POINTS = 200


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` mean a better model."""
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {sorted(HIGHER_IS_BETTER)}") from None


def compute_metrics(schema: FeatureSchema, y_true: np.ndarray, pred: np.ndarray) -> dict:
    """Metrics of predictions ``pred`` (as from ``kfloop.training.booster.predict``) against ``y_true``.

    For classification ``y_true`` holds class indices into ``schema.classes``.
    """
    y_true = np.asarray(y_true)
    if schema.task == "regression":
        return _regression(y_true.astype(np.float64), np.asarray(pred, dtype=np.float64))
    return _classification(schema, y_true.astype(int), np.asarray(pred, dtype=np.float64))


def _regression(y: np.ndarray, pred: np.ndarray) -> dict:
    r2 = skm.r2_score(y, pred) if len(y) >= 2 else None
    return {
        "rmse": _num(math.sqrt(skm.mean_squared_error(y, pred))),
        "mae": _num(skm.mean_absolute_error(y, pred)),
        "r2": _num(r2),
        "n": int(len(y)),
    }


def _classification(schema: FeatureSchema, y: np.ndarray, proba: np.ndarray) -> dict:
    k = len(schema.classes)
    proba = proba / proba.sum(axis=1, keepdims=True)
    labels = np.argmax(proba, axis=1)
    binary = schema.task == "binary"
    out: dict[str, Any] = {
        "auc": _num(_binary_auc(y, proba[:, 1]) if binary else _macro_auc(y, proba)),
        "accuracy": _num(skm.accuracy_score(y, labels)),
        "f1": _num(skm.f1_score(y, labels, average="binary" if binary else "macro", zero_division=0)),
        "log_loss": _num(skm.log_loss(y, proba, labels=list(range(k)))),
        "confusion_matrix": skm.confusion_matrix(y, labels, labels=list(range(k))).tolist(),
        "labels": list(schema.classes),
        "n": int(len(y)),
    }
    if binary:
        out["roc"] = roc_curve(y, proba[:, 1])
    return out


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    return skm.roc_auc_score(y, score)


def _macro_auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    """One-vs-rest AUC averaged over the classes that have both positives and negatives in ``y``."""
    aucs = [_binary_auc((y == c).astype(int), proba[:, c]) for c in range(proba.shape[1])]
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


def roc_curve(y: np.ndarray, score: np.ndarray, max_points: int = MAX_ROC_POINTS) -> dict | None:
    """ROC points ``{fpr, tpr, thresholds}``, at most ``max_points``; the first threshold (sklearn's
    ``inf``, "predict nothing positive") is written as 1.0 so the curve is valid JSON."""
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, thresholds = skm.roc_curve(y, score)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    thresholds = np.minimum(thresholds, 1.0)
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "thresholds": [float(v) for v in thresholds],
    }


def _num(value: Any) -> float | None:
    """A plain float, or None for undefined (None/NaN/inf) values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass
class NaiveBaseline:
    """What a model that ignores the features scores on the test split: the floor every candidate must beat.

    ``rule`` says what the baseline predicts (the training mean, the training majority class, a
    constant score); ``value`` is its primary metric on the test split (``metric``).
    """

    metric: str
    value: float | None
    rule: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def naive_baseline(schema: FeatureSchema, y_train: np.ndarray, y_test: np.ndarray) -> NaiveBaseline:
    """The naive baseline of ``schema.task`` fitted on the training labels and scored on the test labels.

    - regression: predict the training mean; its RMSE on the test split;
    - multiclass: predict the training majority class; its accuracy on the test split;
    - binary: a constant score (such as always the majority class): AUC 0.5 whatever the data.

    Labels as ``FeatureSchema.encode_labels`` gives them (class indices for classification).
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if schema.task == "regression":
        mean = float(np.mean(y_train.astype(np.float64)))
        rmse = math.sqrt(float(np.mean((y_test.astype(np.float64) - mean) ** 2))) if len(y_test) else None
        return NaiveBaseline("rmse", _num(rmse), f"predicting the training mean {mean:.6g}")
    counts = np.bincount(y_train.astype(int), minlength=len(schema.classes))
    majority = int(np.argmax(counts))
    name = schema.classes[majority]
    if schema.task == "binary":
        return NaiveBaseline("auc", 0.5, f"a constant score, such as always the majority class {name!r}")
    accuracy = float(np.mean(y_test.astype(int) == majority)) if len(y_test) else None
    return NaiveBaseline("accuracy", _num(accuracy), f"always the training majority class {name!r}")


AUTO_THRESHOLD = -1.0
"""The ``threshold`` that means "derive it from the naive baseline" (KFP parameters cannot be None)."""
MIN_SKILL = 0.1
"""With the automatic threshold, the candidate's loss must be this fraction below the naive baseline's."""
THRESHOLD_MEANING = {
    "binary": "the minimum test AUC",
    "multiclass": "the minimum test accuracy",
    "regression": "the maximum test RMSE",
}


def check_threshold(threshold: float, task: str | None = None) -> float:
    """``threshold`` if the gate can read it: >= 0 (``THRESHOLD_MEANING`` of ``task``) or ``AUTO_THRESHOLD``."""
    threshold = _finite("threshold", threshold)
    if threshold < 0 and threshold != AUTO_THRESHOLD:
        meaning = (
            THRESHOLD_MEANING[task]
            if task in THRESHOLD_MEANING
            else "; ".join(f"{k}: {v}" for k, v in THRESHOLD_MEANING.items())
        )
        raise ConfigError(
            f"gate threshold {threshold!r} must be >= 0 ({meaning}), or {AUTO_THRESHOLD:g} for the automatic threshold"
        )
    return threshold


def _loss(metric: str, value: float) -> float:
    """The primary metric as a loss (0 is perfect): RMSE itself, 1 - accuracy, 1 - AUC."""
    return value if metric == "rmse" else 1.0 - value


def _from_loss(metric: str, loss: float) -> float:
    return loss if metric == "rmse" else 1.0 - loss


def skill(metric: str, candidate: float, baseline: float) -> float | None:
    """``1 - loss(candidate) / loss(baseline)``: 0 is no better than the baseline, 1 is perfect, < 0 worse.

    For binary AUC against the constant score's 0.5 this is the Gini coefficient 2 AUC - 1; for
    RMSE against the training mean it is close to 1 - sqrt(1 - R2). None when the baseline is
    already perfect (a loss of 0)."""
    base = _loss(metric, baseline)
    return None if base <= 0 else 1.0 - _loss(metric, candidate) / base


def auto_threshold(baseline: NaiveBaseline) -> float | None:
    """The primary metric's value ``MIN_SKILL`` better than the baseline's (None when it is undefined)."""
    if baseline.value is None:
        return None
    return _from_loss(baseline.metric, (1.0 - MIN_SKILL) * _loss(baseline.metric, baseline.value))


@dataclasses.dataclass
class GateDecision:
    """Whether a candidate passed the quality gate, on which metric, and why.

    ``threshold`` is the bar actually applied (the automatic one when ``threshold_rule`` starts
    with "auto"), ``baseline`` the naive baseline's value of ``metric`` and ``baseline_rule`` what
    it predicts."""

    passed: bool
    metric: str
    candidate: float | None
    production: float | None
    threshold: float | None
    threshold_rule: str
    baseline: float | None
    baseline_rule: str
    tolerance: float
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def decide_gate(
    task: str,
    candidate_metrics: Mapping[str, Any],
    production_metrics: Mapping[str, Any] | None,
    threshold: float,
    tolerance: float,
    baseline: NaiveBaseline | None = None,
) -> GateDecision:
    """Pass iff the primary metric is better than the naive ``baseline``'s, meets ``threshold`` and is
    not worse than production by more than ``tolerance`` (an absolute difference).

    ``threshold`` is, per task, ``THRESHOLD_MEANING``; ``AUTO_THRESHOLD`` (-1, the default) derives
    it from the baseline: the candidate's loss ``MIN_SKILL`` (10%) below the baseline's (binary: AUC
    >= 0.55; multiclass: an error rate 10% below the majority class's; regression: an RMSE 10% below
    that of predicting the training mean). Without a production model that comparison is skipped;
    without a baseline (``None``) only binary can derive its threshold (the constant score's AUC 0.5).
    """
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is not one of {TASKS}")
    threshold, tolerance = _finite("threshold", threshold), _finite("tolerance", tolerance)
    if tolerance < 0:
        raise ConfigError(f"gate tolerance {tolerance!r} must be >= 0")
    check_threshold(threshold, task)
    metric = PRIMARY_METRIC[task]
    if baseline is None and task == "binary":
        baseline = NaiveBaseline("auc", 0.5, "a constant score")
    if baseline is not None and baseline.metric != metric:
        raise ConfigError(f"the naive baseline's metric {baseline.metric!r} is not the {task} gate's {metric!r}")
    auto = threshold == AUTO_THRESHOLD
    if auto and baseline is None:
        raise ConfigError(f"the automatic {task} threshold needs the naive baseline (the training labels)")
    applied = auto_threshold(baseline) if auto else threshold
    rule = f"set: {THRESHOLD_MEANING[task]}"
    if auto:
        value = "undefined" if baseline.value is None else f"{baseline.value:.6g}"
        rule = f"auto: {MIN_SKILL:.0%} less loss than the naive baseline ({baseline.rule}) {metric} {value}"
    higher = higher_is_better(metric)
    candidate = _num(candidate_metrics.get(metric))
    production = _num(production_metrics.get(metric)) if production_metrics else None
    decision = GateDecision(
        passed=False,
        metric=metric,
        candidate=candidate,
        production=production,
        threshold=applied,
        threshold_rule=rule,
        baseline=baseline.value if baseline else None,
        baseline_rule=baseline.rule if baseline else "",
        tolerance=tolerance,
        reason="",
    )
    if candidate is None:
        decision.reason = f"candidate {metric} is undefined (got {candidate_metrics.get(metric)!r})"
        return decision
    failures = _baseline_failure(metric, candidate, baseline)
    if not failures or not auto:  # the automatic bar is stricter than the baseline: name the baseline only
        failures += _threshold_failure(metric, candidate, applied, rule, higher)
    failures += _production_failure(metric, candidate, production, tolerance, higher)
    decision.passed = not failures
    decision.reason = "; ".join(failures) if failures else _pass_reason(decision)
    return decision


def _baseline_text(metric: str, baseline: NaiveBaseline) -> str:
    return f"the naive baseline ({baseline.rule}) {metric} {baseline.value:.6g}"


def _baseline_failure(metric: str, candidate: float, baseline: NaiveBaseline | None) -> list[str]:
    if baseline is None:
        return []
    if baseline.value is None:
        return [f"the naive baseline ({baseline.rule}) has no {metric} on the test split"]
    gained = skill(metric, candidate, baseline.value)
    if gained is None:
        return [f"{_baseline_text(metric, baseline)} is already perfect on the test split"]
    if gained > 0:
        return []
    return [
        f"no better than the naive baseline: candidate {metric} {candidate:.6g} "
        f"against {_baseline_text(metric, baseline)}"
    ]


def _threshold_failure(metric: str, candidate: float, threshold: float | None, rule: str, higher: bool) -> list[str]:
    if threshold is None:
        return []
    ok = candidate >= threshold if higher else candidate <= threshold
    sign = ">=" if higher else "<="
    if ok:
        return []
    return [f"threshold failed: candidate {metric} {candidate:.6g} is not {sign} {threshold:.6g} ({rule})"]


def _production_failure(
    metric: str, candidate: float, production: float | None, tolerance: float, higher: bool
) -> list[str]:
    if production is None:
        return []
    worse_by = production - candidate if higher else candidate - production
    if worse_by <= tolerance:
        return []
    return [
        f"regression against production: candidate {metric} {candidate:.6g} is worse than production "
        f"{production:.6g} by {worse_by:.6g}, more than the tolerance {tolerance:.6g}"
    ]


def _pass_reason(d: GateDecision) -> str:
    text = f"candidate {d.metric} {d.candidate:.6g} meets the threshold {d.threshold:.6g} ({d.threshold_rule})"
    if d.baseline is not None and not d.threshold_rule.startswith("auto"):
        text += f" and beats the naive baseline ({d.baseline_rule}) {d.baseline:.6g}"
    if d.production is None:
        return text + f"; no production {d.metric} to compare with"
    return text + f" and is within tolerance of production {d.production:.6g}"


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"gate {name} {value!r} must be a finite number")
    return float(value)


BIAS_ACTIONS = ("", "reject", "approval")
"""What a candidate that breaks the bias limits gets: "" the check is reported only (the default),
"reject" it is not registered (the gate fails), "approval" it is registered as pending-approval."""


@dataclasses.dataclass
class BiasGate:
    """The bias check of a candidate (``kfloop.training.bias.bias_violations`` on the test split)."""

    passed: bool
    action: str
    sensitive_feature: str
    limits: dict
    violations: list
    skipped_groups: list
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def needs_approval(self) -> bool:
        return not self.passed and self.action == "approval"


def check_bias_action(action: str) -> str:
    if action not in BIAS_ACTIONS:
        raise ConfigError(f"bias_action {action!r}: expected '' (report only), 'reject' or 'approval'")
    return action


def decide_bias_gate(report: Mapping[str, Any], limits: Any, action: str = "") -> BiasGate:
    """Check ``report`` (``model_bias_report``) against ``limits`` (``BiasLimits``)."""
    from kfloop.training.bias import bias_violations

    violations, skipped = bias_violations(dict(report), limits)
    feature = str(report.get("sensitive_feature") or report.get("feature") or "")
    if violations:
        reason = f"bias limits broken for {feature}: " + "; ".join(v["rule"] for v in violations)
    else:
        checked = len(report["groups"]) - len(skipped)
        reason = f"bias within limits for {feature} ({checked} groups checked"
        reason += f", {len(skipped)} too small)" if skipped else ")"
    return BiasGate(
        passed=not violations,
        action=check_bias_action(action),
        sensitive_feature=feature,
        limits=limits.to_dict(),
        violations=violations,
        skipped_groups=skipped,
        reason=reason,
    )


def apply_bias_gate(decision: GateDecision, bias: BiasGate) -> GateDecision:
    """The quality gate with the bias check: a failed check fails the gate when its action is "reject";
    with "approval" the gate stands and the register step makes the version pending-approval."""
    if bias.passed or not bias.action:
        return decision
    if bias.action == "reject":
        failure = f"bias check failed ({bias.reason})"
        reason = f"{decision.reason}; {failure}" if not decision.passed else failure
        return dataclasses.replace(decision, passed=False, reason=reason)
    return dataclasses.replace(decision, reason=f"{decision.reason}; pending approval: {bias.reason}")

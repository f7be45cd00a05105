"""Bias drift: the evaluate gate's Clarify metrics, per group of the sensitive feature, on a labeled window.

SageMaker Model Monitor's bias-drift monitor recomputes the post-training bias metrics on live data
with ground truth and alarms when they break their constraints. Here a window of labeled rows (as
``kfloop.monitoring.feedback.labeled_frame`` gives them: raw feature values, the label, the captured
class probabilities) goes through the same ``model_bias_report`` the gate uses, and each group with
enough rows is checked against ``BiasLimits`` (``kfloop.training.bias``). The window's defaults
(``WINDOW_LIMITS``) are the gate's (disparate impact in [0.8, 1.25], |DPPL| <= 0.1) plus
|accuracy difference| <= 0.1, which needs the labels and catches a group-specific change of the
labels the features do not show; each limit counts only when the two facets' rates also differ
significantly (two-proportion z-test at ``alpha`` 0.001: 0.01 shared, Bonferroni-style, by the
about ten tests of a window with four groups), since a group's rate in a window of a few hundred
rows moves by several points by chance alone.

The value is the number of broken limits (alert above 0). Groups with fewer than
``min_group_rows`` (50) rows, or whose other rows are fewer, are skipped and named in the evidence; a
window where every group is skipped is ``insufficient``. Numeric features are cut at ``edges`` when
given (e.g. the ages 60 and over as a group), else at the window's own quartiles. No sensitive
feature, or a regressor: no result (None), the signal is absent.
"""

from __future__ import annotations

import pandas as pd

from kfloop.errors import DataError
from kfloop.monitoring.quality import probability_matrix
from kfloop.monitoring.signals import SignalResult
from kfloop.schema import FeatureSchema
from kfloop.training.bias import BiasLimits, bias_violations, model_bias_report

SIGNAL = "bias_drift"
WINDOW_LIMITS = BiasLimits(max_accuracy_difference=0.1, min_group_rows=50, alpha=0.001)
SHOWN_METRICS = ("n_d", "disparate_impact", "dppl", "accuracy_difference", "dpl")


def bias_drift(
    schema: FeatureSchema,
    labeled: pd.DataFrame,
    sensitive_feature: str,
    *,
    limits: BiasLimits = WINDOW_LIMITS,
    positive_class: str = "",
    edges: list[float] | None = None,
    baseline: dict | None = None,
) -> SignalResult | None:
    """The bias-drift signal of one labeled window (None: the signal does not apply to this model).

    ``baseline`` is the training-time bias report (the bundle's ``bias.json`` ``bias``), shown next
    to the window's metrics in the evidence."""
    if not sensitive_feature or schema.task == "regression":
        return None
    missing = [c for c in (sensitive_feature, schema.target, "prediction") if c not in labeled.columns]
    if missing:
        raise DataError(f"bias drift needs the columns {missing}; the window has {list(labeled.columns)}")
    if len(labeled) == 0:
        return _insufficient(limits, 0, "the window has no labeled rows")
    proba = probability_matrix(labeled["prediction"].tolist(), len(schema.classes))
    report = model_bias_report(
        schema, labeled.reset_index(drop=True), proba, sensitive_feature, positive_class, edges=edges
    )
    violations, skipped = bias_violations(report, limits)
    groups = {g["group"]: g for g in report["groups"]}
    if len(skipped) == len(groups):
        counts = ", ".join(f"{g} {groups[g]['n_d']}" for g in skipped)
        return _insufficient(
            limits,
            len(labeled),
            f"every group of {sensitive_feature} (or the rest of the window) has fewer than "
            f"{limits.min_group_rows} labeled rows ({counts})",
        )
    evidence = {
        "sensitive_feature": sensitive_feature,
        "positive_class": report["positive_class"],
        "violations": violations,
        "skipped_groups": skipped,
        "groups": [{"group": g, **{k: groups[g][k] for k in SHOWN_METRICS}} for g in groups],
        "limits": limits.to_dict(),
    }
    if baseline:
        evidence["baseline_groups"] = [
            {"group": g["group"], **{k: g.get(k) for k in SHOWN_METRICS}} for g in baseline.get("groups", [])
        ]
    return SignalResult(
        SIGNAL,
        "alert" if violations else "ok",
        value=float(len(violations)),
        threshold=0.0,
        direction="above",
        rows=len(labeled),
        evidence=evidence,
    )


def _insufficient(limits: BiasLimits, rows: int, reason: str) -> SignalResult:
    return SignalResult(SIGNAL, "insufficient", threshold=0.0, direction="above", rows=rows, reason=reason)

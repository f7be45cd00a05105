"""Bias metrics of a sensitive feature, as Amazon SageMaker Clarify defines them.

Each value ``d`` of the sensitive feature (facet *d*) is compared with all other rows (facet *a*),
for binary outcomes (positive = 1). Definitions, from the SageMaker Clarify developer guide:

- pre-training (https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-measure-data-bias.html)

  - Class Imbalance ``CI = (n_a - n_d) / (n_a + n_d)``
    (clarify-bias-metric-class-imbalance.html), in [-1, 1];
  - Difference in Proportions of Labels ``DPL = q_a - q_d``, where ``q_x`` is the fraction of
    rows of facet x whose observed label is positive (clarify-data-bias-metric-true-label-imbalance.html);

- post-training (https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-measure-post-training-bias.html)

  - Difference in Positive Proportions in Predicted Labels ``DPPL = q'_a - q'_d``, with ``q'_x``
    the fraction of rows of facet x predicted positive (clarify-post-training-bias-metric-dppl.html);
  - Disparate Impact ``DI = q'_d / q'_a`` (clarify-post-training-bias-metric-di.html), ``None``
    when ``q'_a`` is 0;
  - Accuracy Difference ``AD = acc_a - acc_d`` (clarify-post-training-bias-metric-ad.html).

Grouping: missing values form the group ``"(missing)"``. A numeric feature with more than
``max_groups`` distinct values is cut into ``n_bins`` quantile bins (equal-count bins of the
non-missing values; bins whose edges coincide are merged), named by their interval, such as
``"[18, 31]"`` and ``"(31, 45]"``. Other values are grouped as they are (as strings).

The caller decides what "positive" means: for binary tasks the second class, for multiclass
one chosen class (one-vs-rest). Bias is not computed for regression. ``model_bias_report`` does
that for a model's predictions on a frame (the analyze and evaluate steps, the bias-drift signal);
``edges`` fixes the bins of a numeric feature instead of taking the quantiles of the rows at hand.

**Limits** (``BiasLimits``, ``bias_violations``): the evaluate gate and the bias-drift signal check
each group with at least ``min_group_rows`` rows (and as many in facet a) against

- disparate impact within ``[min_disparate_impact, max_disparate_impact]``: the lower bound 0.8 is
  the four-fifths rule (US EEOC), the upper 1.25 its mirror (the other facet favored as much);
- ``|DPPL| <= max_dppl`` (default 0.1: at most 10 points between the facets' positive rates);
- ``|AD| <= max_accuracy_difference`` when set (labels needed; the bias-drift signal sets it).

With ``alpha`` set, a limit is broken only when the facets' rates also differ significantly (a
two-sided two-proportion z-test at level ``alpha``): on windows of a few hundred rows a group's rate
moves by several points by chance alone, and the signal should not alarm on that.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kfloop.errors import ConfigError, DataError
from kfloop.schema import label_key

MISSING = "(missing)"
DEFINITIONS = {
    "class_imbalance": "CI = (n_a - n_d) / (n_a + n_d): facet d is under-represented when > 0",
    "dpl": "DPL = q_a - q_d: difference in the fractions of positive observed labels",
    "dppl": "DPPL = q'_a - q'_d: difference in the fractions of positive predicted labels",
    "disparate_impact": "DI = q'_d / q'_a: ratio of the fractions of positive predictions (1 = parity)",
    "accuracy_difference": "AD = acc_a - acc_d: how much more accurate the model is on facet a",
}


def bias_report(
    sensitive: pd.Series | np.ndarray,
    y_true_positive: np.ndarray,
    y_pred_positive: np.ndarray,
    *,
    max_groups: int = 10,
    n_bins: int = 4,
    edges: Sequence[float] | None = None,
) -> dict:
    """Clarify bias metrics for every group of ``sensitive`` (facet d) against the other rows (facet a)."""
    y_true = np.asarray(y_true_positive, dtype=bool)
    y_pred = np.asarray(y_pred_positive, dtype=bool)
    series = pd.Series(sensitive).reset_index(drop=True)
    if not len(series) == len(y_true) == len(y_pred):
        raise DataError(
            f"bias inputs differ in length: sensitive {len(series)}, labels {len(y_true)}, predictions {len(y_pred)}"
        )
    if len(series) == 0:
        raise DataError("bias report needs at least one row")
    if max_groups < 1 or n_bins < 1:
        raise ConfigError(f"bias grouping needs max_groups >= 1 and n_bins >= 1, got {max_groups} and {n_bins}")
    groups, order, binned = group_values(series, max_groups, n_bins, edges)
    return {
        "feature": None if series.name is None else str(series.name),
        "binned": binned,
        "n": int(len(series)),
        "definitions": dict(DEFINITIONS),
        "groups": [facet_metrics(str(g), groups == g, y_true, y_pred) for g in order if (groups == g).any()],
    }


def group_values(
    series: pd.Series, max_groups: int = 10, n_bins: int = 4, edges: Sequence[float] | None = None
) -> tuple[np.ndarray, list[str], bool]:
    """The group name of every row, the group names in value order, and whether values were binned."""
    missing = series.isna().to_numpy()
    present = series[~missing]
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    binned = bool(numeric and (edges is not None or present.nunique() > max_groups))
    if binned and edges is not None:
        names, order = _bins(present.to_numpy(dtype=float), _checked_edges(edges))
    elif binned:
        names, order = _quantile_bins(present.to_numpy(dtype=float), n_bins)
    else:
        values = sorted(present.unique()) if numeric else sorted(present.unique(), key=label_key)
        order = list(dict.fromkeys(label_key(v) for v in values))
        names = np.array([label_key(v) for v in present], dtype=object)
    out = np.full(len(series), MISSING, dtype=object)
    out[~missing] = names
    return out, order + ([MISSING] if missing.any() else []), binned


def _quantile_bins(values: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[str]]:
    return _bins(values, np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1))))


def _checked_edges(edges: Sequence[float]) -> np.ndarray:
    out = np.asarray(edges, dtype=float)
    if out.ndim != 1 or len(out) < 2 or not np.isfinite(out).all() or (np.diff(out) <= 0).any():
        raise ConfigError(f"bias bin edges {list(edges)!r} must be at least two increasing finite numbers")
    return out


def _bins(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Bin names of ``values``; values beyond the outer edges fall into the outer bins."""
    index = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, len(edges) - 2)
    labels = [f"{'[' if i == 0 else '('}{edges[i]:.4g}, {edges[i + 1]:.4g}]" for i in range(len(edges) - 1)]
    return np.array(labels, dtype=object)[index], labels


def facet_metrics(group: str, in_d: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """The Clarify metrics of one facet d (rows ``in_d``) against facet a (the other rows)."""
    in_a = ~in_d
    n_d, n_a = int(in_d.sum()), int(in_a.sum())
    q_d, q_a = _rate(y_true, in_d), _rate(y_true, in_a)
    p_d, p_a = _rate(y_pred, in_d), _rate(y_pred, in_a)
    correct = y_true == y_pred
    acc_d, acc_a = _rate(correct, in_d), _rate(correct, in_a)
    return {
        "group": group,
        "n_d": n_d,
        "n_a": n_a,
        "class_imbalance": (n_a - n_d) / (n_a + n_d),
        "q_d": q_d,
        "q_a": q_a,
        "dpl": _diff(q_a, q_d),
        "pred_q_d": p_d,
        "pred_q_a": p_a,
        "dppl": _diff(p_a, p_d),
        "disparate_impact": None if not p_a else p_d / p_a,
        "accuracy_d": acc_d,
        "accuracy_a": acc_a,
        "accuracy_difference": _diff(acc_a, acc_d),
    }


def _rate(flags: np.ndarray, rows: np.ndarray) -> float | None:
    n = int(rows.sum())
    return float(flags[rows].sum()) / n if n else None


def _diff(a: float | None, d: float | None) -> float | None:
    return None if a is None or d is None else a - d


def model_bias_report(
    schema, frame: pd.DataFrame, pred: np.ndarray, sensitive_feature: str, positive_class: str = "", **grouping
) -> dict:
    """``bias_report`` of a classifier's predictions ``pred`` (probabilities, as ``booster.predict``
    gives them) on ``frame`` (with the labels in ``schema.target``), for ``sensitive_feature``;
    positive is ``positive_class`` (default: the last class). ``grouping``: ``bias_report``'s options."""
    if schema.task == "regression":
        raise ConfigError("bias metrics need a classifier: the model is a regressor")
    if sensitive_feature not in frame.columns:
        raise ConfigError(f"sensitive_feature {sensitive_feature!r} is not a column; columns are {schema.names}")
    if positive_class and positive_class not in schema.classes:
        raise ConfigError(f"positive_class {positive_class!r} is not one of {list(schema.classes)}")
    positive = schema.classes.index(positive_class) if positive_class else len(schema.classes) - 1
    y_true = schema.encode_labels(frame[schema.target]) == positive
    y_pred = np.argmax(np.asarray(pred), axis=1) == positive
    report = bias_report(frame[sensitive_feature], y_true, y_pred, **grouping)
    report["sensitive_feature"], report["positive_class"] = sensitive_feature, schema.classes[positive]
    return report


@dataclasses.dataclass(frozen=True)
class BiasLimits:
    """The bounds a group's bias metrics must keep (see the module docstring)."""

    min_disparate_impact: float = 0.8
    max_disparate_impact: float = 1.25
    max_dppl: float = 0.1
    max_accuracy_difference: float | None = None
    min_group_rows: int = 30
    alpha: float | None = None

    def __post_init__(self):
        for name in ("min_disparate_impact", "max_disparate_impact", "max_dppl", "max_accuracy_difference", "alpha"):
            value = getattr(self, name)
            if value is None and name in ("max_accuracy_difference", "alpha"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"bias limit {name}={value!r} must be a finite number >= 0")
        if not self.min_disparate_impact <= self.max_disparate_impact:
            raise ConfigError(
                f"bias limits: min_disparate_impact {self.min_disparate_impact} is above "
                f"max_disparate_impact {self.max_disparate_impact}"
            )
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ConfigError(f"bias limit alpha={self.alpha!r} must be in (0, 1)")
        if isinstance(self.min_group_rows, bool) or not isinstance(self.min_group_rows, int) or self.min_group_rows < 1:
            raise ConfigError(f"bias limit min_group_rows={self.min_group_rows!r} must be a positive number of rows")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def bias_violations(report: dict, limits: BiasLimits) -> tuple[list[dict], list[str]]:
    """The broken limits of ``report``'s groups (``{"group", "metric", "value", "limit", "rule"}``) and
    the groups skipped because they (or the other rows) have fewer than ``limits.min_group_rows``."""
    violations, skipped = [], []
    for g in report["groups"]:
        if min(g["n_d"], g["n_a"]) < limits.min_group_rows:
            skipped.append(g["group"])
            continue
        violations += _group_violations(g, limits)
    return violations, skipped


def _group_violations(g: dict, limits: BiasLimits) -> list[dict]:
    out = []
    predicted_differ = _differ(g["pred_q_d"], g["pred_q_a"], g["n_d"], g["n_a"], limits.alpha)
    di = g["disparate_impact"]
    if di is not None and predicted_differ and di < limits.min_disparate_impact:
        out.append(_violation(g, "disparate_impact", di, limits.min_disparate_impact, "four-fifths rule: DI", "<"))
    if di is not None and predicted_differ and di > limits.max_disparate_impact:
        out.append(_violation(g, "disparate_impact", di, limits.max_disparate_impact, "DI", ">"))
    if g["dppl"] is not None and predicted_differ and abs(g["dppl"]) > limits.max_dppl:
        out.append(_violation(g, "dppl", g["dppl"], limits.max_dppl, "|DPPL|", ">"))
    ad, max_ad = g["accuracy_difference"], limits.max_accuracy_difference
    if ad is not None and max_ad is not None and abs(ad) > max_ad:
        if _differ(g["accuracy_d"], g["accuracy_a"], g["n_d"], g["n_a"], limits.alpha):
            out.append(_violation(g, "accuracy_difference", ad, max_ad, "|AD|", ">"))
    return out


def _violation(g: dict, metric: str, value: float, limit: float, what: str, sign: str) -> dict:
    return {
        "group": g["group"],
        "metric": metric,
        "value": value,
        "limit": limit,
        "rule": f"group {g['group']}: {what} {value:.3g} {sign} {limit:.3g}",
    }


def _differ(rate_d: float | None, rate_a: float | None, n_d: int, n_a: int, alpha: float | None) -> bool:
    """Whether the two rates differ significantly (two-proportion z-test; always True without ``alpha``)."""
    if alpha is None:
        return True
    if rate_d is None or rate_a is None:
        return False
    pooled = (rate_d * n_d + rate_a * n_a) / (n_d + n_a)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_d + 1 / n_a))
    if se == 0:
        return rate_d != rate_a
    return math.erfc(abs(rate_d - rate_a) / se / math.sqrt(2)) < alpha

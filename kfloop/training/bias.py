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
one chosen class (one-vs-rest). Bias is not computed for regression.
"""

from __future__ import annotations

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
    groups, order, binned = group_values(series, max_groups, n_bins)
    return {
        "feature": None if series.name is None else str(series.name),
        "binned": binned,
        "n": int(len(series)),
        "definitions": dict(DEFINITIONS),
        "groups": [facet_metrics(str(g), groups == g, y_true, y_pred) for g in order if (groups == g).any()],
    }


def group_values(series: pd.Series, max_groups: int = 10, n_bins: int = 4) -> tuple[np.ndarray, list[str], bool]:
    """The group name of every row, the group names in value order, and whether values were binned."""
    missing = series.isna().to_numpy()
    present = series[~missing]
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    binned = bool(numeric and present.nunique() > max_groups)
    if binned:
        names, order = _quantile_bins(present.to_numpy(dtype=float), n_bins)
    else:
        values = sorted(present.unique()) if numeric else sorted(present.unique(), key=label_key)
        order = list(dict.fromkeys(label_key(v) for v in values))
        names = np.array([label_key(v) for v in present], dtype=object)
    out = np.full(len(series), MISSING, dtype=object)
    out[~missing] = names
    return out, order + ([MISSING] if missing.any() else []), binned


def _quantile_bins(values: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[str]]:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
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

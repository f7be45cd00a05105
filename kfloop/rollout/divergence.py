"""How far apart two revisions' predictions are: one number in [0, 1] per comparison.

- Classifiers (per-row class probabilities): the Jensen-Shannon distance (base 2, so 0 for the
  same distribution and 1 for disjoint ones) between histograms of each class's probability on
  ``bins`` equal bins of [0, 1]; for two classes the positive class only, for more the largest
  distance over the classes (the class whose probabilities moved most).
- Regressors (one value per row): the two-sample Kolmogorov-Smirnov statistic, the largest gap
  between the two empirical distribution functions (scale-free, also in [0, 1]).

Both are effect sizes, not tests: with ``n`` rows per side, samples of one distribution still
differ by chance. For the JS distance on 10 bins that noise is about 0.15 at 100 vs 400 rows and
0.10 at 200 vs 800 (99th percentile 0.23 and 0.16); the KS statistic's 99th percentile is
``1.63 * sqrt((n + m) / (n m))`` (0.13 at 200 vs 800). Thresholds should sit above that noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kfloop.errors import DataError

DEFAULT_BINS = 10


def js_distance(a: Sequence[float], b: Sequence[float], bins: int = DEFAULT_BINS) -> float:
    """Jensen-Shannon distance (base 2) between histograms of ``a`` and ``b`` on [0, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    p = np.histogram(np.clip(np.asarray(a, dtype=float), 0, 1), edges)[0].astype(float)
    q = np.histogram(np.clip(np.asarray(b, dtype=float), 0, 1), edges)[0].astype(float)
    if not p.sum() or not q.sum():
        raise DataError(f"JS distance needs values on both sides; got {len(a)} and {len(b)}")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    divergence = (_kl(p, m) + _kl(q, m)) / 2
    return float(np.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    used = p > 0
    return float(np.sum(p[used] * np.log2(p[used] / q[used])))


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: max |F_a(x) - F_b(x)|."""
    x, y = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    if not len(x) or not len(y):
        raise DataError(f"KS statistic needs values on both sides; got {len(x)} and {len(y)}")
    grid = np.concatenate([x, y])
    gaps = np.searchsorted(x, grid, side="right") / len(x) - np.searchsorted(y, grid, side="right") / len(y)
    return float(np.max(np.abs(gaps)))


def prediction_divergence(stable: Sequence, canary: Sequence, bins: int = DEFAULT_BINS) -> tuple[float, str]:
    """The divergence of two samples of captured predictions and the measure used
    (``"js_distance"`` for probability rows, ``"ks_statistic"`` for values)."""
    if _is_probability_rows(stable) and _is_probability_rows(canary):
        p, q = _probabilities(stable), _probabilities(canary)
        if p.shape[1] != q.shape[1]:
            raise DataError(f"stable predicts {p.shape[1]} classes, canary {q.shape[1]}: not comparable")
        classes = [1] if p.shape[1] == 2 else range(p.shape[1])
        return max(js_distance(p[:, c], q[:, c], bins) for c in classes), "js_distance"
    if _is_probability_rows(stable) or _is_probability_rows(canary):
        raise DataError("one revision answers class probabilities, the other single values: not comparable")
    try:
        return ks_statistic(np.asarray(stable, dtype=float), np.asarray(canary, dtype=float)), "ks_statistic"
    except (TypeError, ValueError) as e:
        raise DataError(f"predictions are neither probability rows nor numbers: {e}") from None


def _is_probability_rows(values: Sequence) -> bool:
    return len(values) > 0 and isinstance(values[0], (list, tuple, np.ndarray))


def _probabilities(rows: Sequence) -> np.ndarray:
    try:
        proba = np.asarray(list(rows), dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"predictions are not rows of class probabilities: {e}") from None
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise DataError(f"predictions have shape {proba.shape}: expected one row of class probabilities each")
    totals = proba.sum(axis=1, keepdims=True)
    return proba / np.where(totals > 0, totals, 1.0)

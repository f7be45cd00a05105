"""The ``data_quality`` signal: one window of served rows checked against the baseline's constraints.

Per feature (``kfloop.monitoring.constraints``): the missing rate, the share of numeric values outside
the training range, the share of categorical values not seen in training; per window: the requests
the transformer rejected (HTTP 400: values of the wrong type, missing features, bad shapes) since the
previous window, per window row. A check is *violated* when its share is above its tolerance AND more
than chance allows: a one-sided binomial test rejects, at ``ALPHA`` (0.001), that the window's rows
have the training rate. The training rate is the feature's missing rate for missing values,
``2 / (rows + 1)`` for out-of-range values (the chance that a new value from the same distribution
falls outside the range of ``rows`` training values), ``1 / (rows + 1)`` for unseen categories and 0
for rejected requests. The tolerance says how large a change matters; the test keeps small windows
from alarming on chance (with 50 rows and a 1% tolerance, one value out of range is not a violation;
two are).

The result's ``value`` is the number of violated checks (alert above 0), ``evidence`` lists each
violation and the window's missing rates. A window of fewer than the constraints' ``min_rows`` rows
is ``insufficient``. Unseen categories reach the window as NaN (the decoder's encoding); their counts
come from the decoder (``Decoded.unseen``), so the missing count of a categorical feature is its NaN
count less its unseen count.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import binom

from kfloop.monitoring.constraints import Baseline
from kfloop.monitoring.signals import SignalResult

SIGNAL = "data_quality"
ALPHA = 0.001
CHECKS = ("missing_rate", "out_of_range", "unseen_categories", "rejected_requests")


def check_data_quality(
    baseline: Baseline, X: np.ndarray, unseen: Mapping[str, int] | None = None, rejected_requests: int = 0
) -> SignalResult:
    """The ``data_quality`` result of one window: ``X`` its encoded rows, ``unseen`` the unseen
    categories per feature among them, ``rejected_requests`` the requests refused since the last window."""
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    if n < baseline.min_rows:
        return SignalResult(
            SIGNAL,
            "insufficient",
            rows=n,
            reason=f"{n} rows in the window; the constraints need at least {baseline.min_rows} for a verdict",
        )
    unseen = unseen or {}
    violations: list[dict] = []
    missing_rates: dict[str, float] = {}
    nan = np.isnan(X)
    nan_counts = nan.sum(axis=0)
    lows, highs = _bounds(baseline)
    with np.errstate(invalid="ignore"):  # NaN (missing, or no bound) compares False: not counted
        below_counts, above_counts = (X < lows).sum(axis=0), (X > highs).sum(axis=0)

    def check(feature: str, what: str, count: int, limit: float, chance: float, **details) -> None:
        share = count / n
        if share > limit and _unlikely(count, n, chance):
            violations.append(
                {"feature": feature, "check": what, "count": int(count), "share": round(share, 6), "limit": limit}
                | details
            )

    for j, f in enumerate(baseline.features):
        col = X[:, j]
        n_unseen = 0
        if f.kind == "categorical":
            present = col[~nan[:, j]]
            bad_codes = int(((present < 0) | (present >= len(f.categories))).sum())
            n_unseen = min(int(unseen.get(f.name, 0)), int(nan_counts[j])) + bad_codes
            n_missing = int(nan_counts[j]) - (n_unseen - bad_codes)
            check(f.name, "unseen_categories", n_unseen, baseline.unseen_tolerance, 1 / (baseline.rows + 1))
        else:
            n_missing = int(nan_counts[j])
            if f.min is not None and f.max is not None:
                low, high = int(below_counts[j]), int(above_counts[j])
                if low or high:
                    present = col[~nan[:, j]]
                    check(
                        f.name,
                        "out_of_range",
                        low + high,
                        baseline.out_of_range_tolerance,
                        2 / (baseline.rows + 1),
                        range=[f.min, f.max],
                        below=low,
                        above=high,
                        window_min=float(present.min()),
                        window_max=float(present.max()),
                    )
        missing_rates[f.name] = round(n_missing / n, 6)
        check(
            f.name,
            "missing_rate",
            n_missing,
            f.max_missing_rate,
            f.missing_rate,
            training_rate=round(f.missing_rate, 6),
        )
    if rejected_requests:
        check("", "rejected_requests", rejected_requests, baseline.rejected_tolerance, 0.0)
    return SignalResult(
        SIGNAL,
        "alert" if violations else "ok",
        value=float(len(violations)),
        threshold=0.0,
        direction="above",
        rows=n,
        evidence={
            "violations": violations,
            "violated_features": sorted({v["feature"] for v in violations if v["feature"]}),
            "missing_rates": missing_rates,
            "rejected_requests": int(rejected_requests),
        },
    )


def _bounds(baseline: Baseline) -> tuple[np.ndarray, np.ndarray]:
    """The numeric features' training ranges as two float32 rows (NaN for categorical features and features
    without a range), remembered per baseline."""
    known = _BOUNDS.get(id(baseline))
    if known is None or known[0] is not baseline:
        ranged = [f.kind != "categorical" and f.min is not None and f.max is not None for f in baseline.features]
        lows = np.array([f.min if r else np.nan for f, r in zip(baseline.features, ranged)], dtype=np.float32)
        highs = np.array([f.max if r else np.nan for f, r in zip(baseline.features, ranged)], dtype=np.float32)
        if len(_BOUNDS) >= 64:
            _BOUNDS.clear()
        known = _BOUNDS[id(baseline)] = (baseline, lows, highs)
    return known[1], known[2]


_BOUNDS: dict[int, tuple[Baseline, np.ndarray, np.ndarray]] = {}


def _unlikely(count: int, n: int, rate: float) -> bool:
    """Whether ``count`` or more of ``n`` rows is unlikely (p < ALPHA) at the training ``rate``."""
    if rate <= 0:
        return count > 0
    return float(binom.sf(count - 1, n, min(rate, 1.0))) < ALPHA

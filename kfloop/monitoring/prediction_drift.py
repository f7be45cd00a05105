"""The ``prediction_drift`` signal: a window's predictions against the training prediction distribution.

For classifiers the class probabilities are compared (binary: the probability of the second class;
multiclass: each class's), for regressors the predicted values, with the two-sample
Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) of the window against the baseline's sample of
training predictions (``kfloop.monitoring.constraints``, at most 2,000 rows). With several outputs the
p-values are Bonferroni-corrected (multiplied by the number of outputs). The result's ``value`` is the
smallest corrected p-value and alerts below the constraints' ``prediction_drift.p_val`` (default
0.01). ``evidence`` gives per output the KS statistic, the p-value, the population stability index
(PSI over the training deciles, for comparison with other tools: above 0.25 is usually read as a
large shift) and the window's and training's mean and quantiles. A window of fewer than
``min_rows`` rows is ``insufficient``.

Why KS and not PSI as the verdict: PSI has no sampling distribution, so a fixed PSI threshold alarms
more often on small windows than on large ones; the KS p-value means the same at every window size.
The training predictions are the model's on its own training rows, slightly more confident than on
new rows; with early stopping the effect is small (see the README's monitoring figures).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.stats import ks_2samp

from kfloop.monitoring.constraints import Baseline
from kfloop.monitoring.signals import SignalResult

SIGNAL = "prediction_drift"
PSI_BINS = 10
_EPS = 1e-4


def check_prediction_drift(baseline: Baseline, predictions: Any) -> SignalResult:
    """The ``prediction_drift`` result of one window's ``predictions`` (as the predictor answered them)."""
    P = np.round(baseline.columns(predictions), 6)  # the precision the baseline keeps (constraints.compute)
    P = P[np.isfinite(P).all(axis=1)]
    n = len(P)
    if n < baseline.min_rows:
        return SignalResult(
            SIGNAL,
            "insufficient",
            rows=n,
            reason=f"{n} predictions in the window; the test needs at least {baseline.min_rows} for a verdict",
        )
    m = P.shape[1]
    outputs, smallest = {}, 1.0
    for i, name in enumerate(baseline.prediction_outputs):
        ref, live = _reference(baseline.prediction_sample, i), P[:, i]
        statistic, p_value = ks_test(ref, live)
        p = min(1.0, p_value * m)
        smallest = min(smallest, p)
        outputs[name] = {
            "ks_statistic": round(statistic, 6),
            "p_value": p,
            "psi": round(psi(ref, live), 6),
            "window_mean": round(float(live.mean()), 6),
            "training_mean": ref.mean,
            "window_quantiles": [round(float(q), 6) for q in np.quantile(live, (0.05, 0.5, 0.95))],
            "training_quantiles": ref.quantiles,
        }
    threshold = baseline.prediction_p_val
    drifted = sorted(name for name, o in outputs.items() if o["p_value"] < threshold)
    return SignalResult(
        SIGNAL,
        "alert" if smallest < threshold else "ok",
        value=smallest,
        threshold=threshold,
        direction="below",
        rows=n,
        evidence={"test": "ks", "correction": "bonferroni", "outputs": outputs, "drifted_outputs": drifted},
    )


class Reference(NamedTuple):
    """One output's baseline predictions and what every window's checks need of them, computed once:
    sorted, the PSI bins' edges and shares, the mean and quantiles as reported."""

    values: np.ndarray
    sorted: np.ndarray
    edges: np.ndarray
    shares: np.ndarray
    mean: float
    quantiles: list[float]

    @classmethod
    def of(cls, values: np.ndarray, bins: int = PSI_BINS) -> Reference:
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        shares = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1) / len(values)
        quantiles = [round(float(q), 6) for q in np.quantile(values, (0.05, 0.5, 0.95))]
        return cls(values, np.sort(values), edges, shares, round(float(values.mean()), 6), quantiles)


def _reference(sample: np.ndarray, column: int) -> Reference:
    """``Reference.of(sample[:, column])``, remembered per baseline sample (a baseline's sample is not changed
    once loaded)."""
    key = (id(sample), column)
    known = _REFERENCES.get(key)
    if known is None or known[0] is not sample:
        if len(_REFERENCES) >= _REFERENCE_CACHE:
            _REFERENCES.clear()
        known = _REFERENCES[key] = (sample, Reference.of(sample[:, column]))
    return known[1]


_REFERENCE_CACHE = 64  # outputs of the baselines loaded at once (a few versions' classes)
_REFERENCES: dict[tuple[int, int], tuple[np.ndarray, Reference]] = {}


def ks_test(reference: np.ndarray | Reference, live: np.ndarray) -> tuple[float, float]:
    """``ks_2samp(reference, live)``'s statistic and p-value (two-sided, ``method="auto"``). The statistic
    is computed as ``ks_2samp`` computes it (the same operations, so the same float); the p-value depends
    only on it and the two sample sizes, so it is remembered per (sizes, statistic): with a fixed window
    size the statistic takes at most lcm(n1, n2) + 1 values, and ``ks_2samp`` costs ~1 ms of a window's
    check (its exact p-value and its argument handling), the statistic alone ~0.1 ms."""
    data1 = reference.sorted if isinstance(reference, Reference) else np.sort(reference)
    reference = reference.values if isinstance(reference, Reference) else reference
    data2 = np.sort(live)
    n1, n2 = len(data1), len(data2)
    data_all = np.concatenate([data1, data2])
    cddiffs = np.searchsorted(data1, data_all, side="right") / n1 - np.searchsorted(data2, data_all, side="right") / n2
    min_s, max_s = np.clip(-cddiffs.min(), 0, 1), cddiffs.max()
    key = (n1, n2, float(min_s if min_s > max_s else max_s))
    known = _KS_P.get(key)
    if known is None:  # (the exact method rounds the statistic: what it returns is remembered)
        test = ks_2samp(reference, live)
        if len(_KS_P) >= _KS_P_CACHE:
            _KS_P.clear()
        known = _KS_P[key] = (float(test.statistic), float(test.pvalue))
    return known


_KS_P_CACHE = 20_000  # p-values remembered (a few hundred kB)
_KS_P: dict[tuple[int, int, float], tuple[float, float]] = {}  # (sizes, statistic): ks_2samp's answer


def psi(reference: np.ndarray | Reference, live: np.ndarray, bins: int = PSI_BINS) -> float:
    """The population stability index of ``live`` against ``reference``, over the reference's quantile
    bins (fewer when values repeat); shares are floored at 1e-4 so an empty bin stays finite."""
    if not isinstance(reference, Reference) or bins != PSI_BINS:
        reference = Reference.of(reference.values if isinstance(reference, Reference) else reference, bins)
    edges, ref = reference.edges, reference.shares
    cur = np.bincount(np.searchsorted(edges, live, side="right"), minlength=len(edges) + 1) / max(len(live), 1)
    ref, cur = np.maximum(ref, _EPS), np.maximum(cur, _EPS)
    return float(np.sum((cur - ref) * np.log(cur / ref)))

"""Named built-in data sources, loaded with ``sample:NAME?knob=value&...``.

``churn`` is a seeded synthetic customer-churn table with knobs for data drift (``age_shift``),
concept drift (``concept_drift``), a joint shift (``joint_shift``), a change of which features matter
(``attribution_shift``) and a group-specific change (``senior_churn``), so the whole loop (train,
serve, detect drift, retrain) and every monitoring signal can be exercised without downloading
anything. ``breast_cancer`` is scikit-learn's bundled copy of the Wisconsin breast cancer data set.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd

from kfloop.errors import ConfigError
from kfloop.training.sample_defaults import SAMPLE_DEFAULTS

CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENT_METHODS = ("electronic-check", "mailed-check", "bank-transfer", "credit-card")
INTERNET_SERVICES = ("dsl", "fiber", "none")


def churn(
    n_rows: int = 5000,
    seed: int = 0,
    age_shift: float = 0.0,
    concept_drift: float = 0.0,
    joint_shift: float = 0.0,
    attribution_shift: float = 0.0,
    senior_churn: float = 0.0,
    missing_rate: float = 0.0,
    charges_scale: float = 1.0,
    unseen_rate: float = 0.0,
    contract_shift: float = 0.0,
) -> pd.DataFrame:
    """A synthetic customer-churn table with ``n_rows`` rows and the 0/1 target ``churn``.

    Features are drawn first, in a fixed order from one generator, so the same ``seed`` gives the
    same customers whatever the drift knobs: ``age_shift`` only adds years to ``age`` (data drift),
    ``concept_drift`` in [0, 1] only changes how churn depends on the features. At 0 churn rises
    with month-to-month contracts, short tenure, high charges, support calls, fiber and electronic
    checks, and age does not matter; at 1 the tenure and contract effects are reversed and older
    customers churn more. In between the two logits are blended linearly.

    The monitoring knobs (each in [0, 1] but ``senior_churn``) draw from a second generator seeded by
    ``seed``, so they too leave the other customers as they were:

    - ``joint_shift``: a share of the rows get the ``total_charges`` of another row of that share (a
      permutation), so every column's marginal distribution is unchanged but total charges no longer
      follow monthly charges times tenure: a joint shift per-feature tests cannot see;
    - ``attribution_shift``: a share of the customers get a one-year contract, 20 months of tenure
      and 6 more support calls, so support calls drive the model's scores and contract and tenure
      hardly do (a change of which features matter);
    - ``senior_churn``: added to the churn logit of customers aged 60 or more (a group-specific
      change of the labels; the features stay as they were).

    Data-quality knobs (applied after the target is drawn, from a generator of their own, so the same
    customers and labels come out): ``missing_rate`` in [0, 1] blanks that share of ``monthly_charges``
    and of ``contract`` (missing values); ``charges_scale`` multiplies both charge columns (10 looks
    like a unit change: values far outside the training range; 1.3 a price rise the model answers
    with more churn); ``unseen_rate`` in [0, 1] gives that share of customers the ``payment_method``
    "crypto", a category training never saw. ``contract_shift`` in [0, 1] moves that share of one- and
    two-year customers to month-to-month contracts: valid values the model answers with more churn
    (a shift of its predictions, not of data quality).
    """
    _check_churn_knobs(n_rows, concept_drift, joint_shift, attribution_shift)
    _check_quality_knobs(missing_rate, charges_scale, unseen_rate, contract_shift)
    rng = np.random.default_rng(seed)
    features = _churn_features(rng, n_rows, age_shift)
    knobs = np.random.default_rng([seed, 11])
    if attribution_shift:
        _shift_attribution(features, knobs.random(n_rows) < attribution_shift)
    logit = (1.0 - concept_drift) * _logit_before(features) + concept_drift * _logit_after(features)
    logit = logit + senior_churn * (features["age"] - age_shift >= 60.0)
    if joint_shift:
        features["total"] = _permuted(features["total"], knobs.random(n_rows) < joint_shift, knobs)
    target = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = _churn_frame(features, target)
    if missing_rate or charges_scale != 1.0 or unseen_rate or contract_shift:
        _spoil(frame, np.random.default_rng([seed, 1]), missing_rate, charges_scale, unseen_rate, contract_shift)
    return frame


def _check_quality_knobs(missing_rate: float, charges_scale: float, unseen_rate: float, contract_shift: float) -> None:
    for name, value in (
        ("missing_rate", missing_rate),
        ("unseen_rate", unseen_rate),
        ("contract_shift", contract_shift),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"churn: {name}={value} must be between 0 and 1")
    if not charges_scale > 0:
        raise ConfigError(f"churn: charges_scale={charges_scale} must be above 0")


def _spoil(
    frame: pd.DataFrame, rng: np.random.Generator, missing: float, scale: float, unseen: float, shift: float
) -> None:
    """The data-quality and prediction-shift knobs of ``churn``, in place."""
    n = len(frame)
    if shift:
        frame.loc[(frame["contract"] != CONTRACTS[0]) & (rng.random(n) < shift), "contract"] = CONTRACTS[0]
    frame["monthly_charges"] = np.round(frame["monthly_charges"] * scale, 2)
    frame["total_charges"] = np.round(frame["total_charges"] * scale, 2)
    if missing:
        frame.loc[rng.random(n) < missing, "monthly_charges"] = np.nan
        frame.loc[rng.random(n) < missing, "contract"] = None
    if unseen:
        frame.loc[rng.random(n) < unseen, "payment_method"] = "crypto"


def _churn_frame(features: dict[str, np.ndarray], target: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": features["age"],
            "tenure_months": features["tenure"],
            "monthly_charges": features["monthly"],
            "total_charges": features["total"],
            "support_calls": features["calls"],
            "contract": _labels(CONTRACTS, features["contract"]),
            "payment_method": _labels(PAYMENT_METHODS, features["payment"]),
            "internet_service": _labels(INTERNET_SERVICES, features["internet"]),
            "churn": target,
        }
    )


def _check_churn_knobs(n_rows: int, concept_drift: float, joint_shift: float, attribution_shift: float) -> None:
    if n_rows < 1:
        raise ConfigError(f"churn: n_rows={n_rows} must be at least 1")
    for name, value in (
        ("concept_drift", concept_drift),
        ("joint_shift", joint_shift),
        ("attribution_shift", attribution_shift),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"churn: {name}={value} must be between 0 and 1")


def _shift_attribution(f: dict[str, np.ndarray], rows: np.ndarray) -> None:
    f["contract"] = np.where(rows, 1, f["contract"])
    f["tenure"] = np.where(rows, 20, f["tenure"])
    f["calls"] = f["calls"] + 6 * rows
    f["total"] = np.where(rows, np.round(f["monthly"] * 20, 2), f["total"])


def _permuted(values: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = values.copy()
    picked = np.flatnonzero(rows)
    out[picked] = values[rng.permutation(picked)]
    return out


def _churn_features(rng: np.random.Generator, n: int, age_shift: float) -> dict[str, np.ndarray]:
    """Customer features as arrays; category columns hold codes into the tuples above."""
    contract = rng.choice(3, size=n, p=[0.5, 0.25, 0.25])
    internet = rng.choice(3, size=n, p=[0.35, 0.45, 0.2])
    payment = rng.choice(4, size=n, p=[0.35, 0.2, 0.22, 0.23])
    age = np.clip(rng.normal(42.0, 13.0, n), 18.0, 90.0) + age_shift
    tenure = np.minimum(rng.exponential(np.array([14.0, 30.0, 48.0])[contract]), 72.0).astype(np.int64)
    base = np.array([55.0, 85.0, 22.0])[internet]
    monthly = np.round(np.maximum(base + rng.normal(0.0, 12.0, n), 15.0), 2)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, n), 2)
    calls = rng.poisson(0.8 + 0.8 * (internet == 1) + 0.01 * np.maximum(monthly - 60.0, 0.0))
    return {
        "age": np.round(age, 1),
        "tenure": tenure,
        "monthly": monthly,
        "total": total,
        "calls": calls.astype(np.int64),
        "contract": contract,
        "internet": internet,
        "payment": payment,
    }


def _logit_before(f: dict[str, np.ndarray]) -> np.ndarray:
    """The churn logit the reference model learns (``concept_drift=0``)."""
    return (
        -2.0
        + np.array([1.3, -0.3, -1.6])[f["contract"]]
        - 0.045 * (f["tenure"] - 20.0)
        + 0.02 * (f["monthly"] - 60.0)
        + 0.45 * (f["calls"] - 1.3)
        + np.array([0.0, 0.45, -0.4])[f["internet"]]
        + np.array([0.6, 0.0, -0.2, -0.2])[f["payment"]]
    )


def _logit_after(f: dict[str, np.ndarray]) -> np.ndarray:
    """The changed relationship (``concept_drift=1``): tenure and contract reversed, age matters."""
    return (
        -1.6
        - np.array([1.3, -0.3, -1.6])[f["contract"]]
        + 0.045 * (f["tenure"] - 20.0)
        + 0.07 * (np.clip(f["age"], 18.0, 90.0) - 42.0)
        + 0.45 * (f["calls"] - 1.3)
    )


def _labels(names: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
    return np.array(names, dtype=object)[codes]


def breast_cancer() -> pd.DataFrame:
    """scikit-learn's bundled Wisconsin breast cancer data: 569 rows, 30 numeric features, ``target``."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame


SAMPLES: dict[str, Callable[..., pd.DataFrame]] = {"churn": churn, "breast_cancer": breast_cancer}
SAMPLE_TARGETS = {name: columns["target"] for name, columns in SAMPLE_DEFAULTS.items()}


def parse_sample_spec(spec: str) -> tuple[str, dict[str, int | float]]:
    """``NAME?knob=value&...`` to the sample's name and its knobs, typed like the generator's defaults."""
    name, _, query = spec.strip().partition("?")
    if name not in SAMPLES:
        raise ConfigError(f"unknown sample {name!r}; known samples are {sorted(SAMPLES)}")
    params = inspect.signature(SAMPLES[name]).parameters
    knobs: dict[str, int | float] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in params:
            raise ConfigError(f"sample {name!r} has no knob {key!r}; its knobs are {sorted(params)}")
        knobs[key] = _parse_knob(name, key, raw, params[key].default)
    return name, knobs


def _parse_knob(name: str, key: str, raw: str, default: object) -> int | float:
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"sample {name!r}: knob {key}={raw!r} is not a valid {kind.__name__}") from None
    if isinstance(value, float) and not np.isfinite(value):
        raise ConfigError(f"sample {name!r}: knob {key}={raw!r} must be a finite number")
    return value


def canonical_spec(spec: str) -> str:
    """The spec with every knob spelled out (defaults included) in name order, so equal specs are equal strings."""
    name, knobs = parse_sample_spec(spec)
    params = inspect.signature(SAMPLES[name]).parameters
    values = {key: knobs.get(key, p.default) for key, p in sorted(params.items())}
    query = "&".join(f"{key}={value!r}" for key, value in values.items())
    return f"{name}?{query}" if query else name


def load_sample(spec: str) -> pd.DataFrame:
    """The frame of a built-in sample, e.g. ``churn``, ``churn?n_rows=1000&age_shift=10``, ``breast_cancer``."""
    name, knobs = parse_sample_spec(spec)
    return SAMPLES[name](**knobs)

"""The built-in samples: the churn generator's shape, determinism, drift knobs and learnability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from kfloop.errors import ConfigError
from kfloop.training.samples import (
    CONTRACTS,
    INTERNET_SERVICES,
    PAYMENT_METHODS,
    SAMPLE_TARGETS,
    SAMPLES,
    canonical_spec,
    churn,
    load_sample,
)

CATEGORICAL = ("contract", "payment_method", "internet_service")


def _features(df: pd.DataFrame) -> pd.DataFrame:
    x = df.drop(columns="churn")
    return x.astype({c: "category" for c in CATEGORICAL})


@pytest.fixture(scope="module")
def model() -> xgb.XGBClassifier:
    train = churn(5000, seed=1)
    return xgb.XGBClassifier(
        n_estimators=150, max_depth=3, learning_rate=0.08, enable_categorical=True, tree_method="hist", n_jobs=2
    ).fit(_features(train), train["churn"])


def _auc(model: xgb.XGBClassifier, df: pd.DataFrame) -> float:
    return roc_auc_score(df["churn"], model.predict_proba(_features(df))[:, 1])


def test_churn_columns_types_and_target_rate():
    df = churn(20_000, seed=0)
    assert len(df) == 20_000
    assert {"age", "tenure_months", "monthly_charges", "total_charges", "support_calls", "churn"} <= set(df.columns)
    for col in ("age", "tenure_months", "monthly_charges", "total_charges", "support_calls"):
        assert pd.api.types.is_numeric_dtype(df[col]), col
    assert set(df["contract"]) == set(CONTRACTS)
    assert set(df["payment_method"]) == set(PAYMENT_METHODS)
    assert set(df["internet_service"]) == set(INTERNET_SERVICES)
    assert df["churn"].dtype == np.int64 and set(df["churn"]) == {0, 1}
    assert 0.20 <= df["churn"].mean() <= 0.35
    assert not df.isna().any().any()


def test_churn_is_deterministic_per_seed():
    pd.testing.assert_frame_equal(
        churn(3000, seed=7, age_shift=5, concept_drift=0.3), churn(3000, seed=7, age_shift=5, concept_drift=0.3)
    )
    assert not churn(3000, seed=7).equals(churn(3000, seed=8))


def test_age_shift_moves_age_and_nothing_else():
    base, shifted = churn(10_000, seed=3), churn(10_000, seed=3, age_shift=15)
    assert shifted["age"].mean() - base["age"].mean() == pytest.approx(15, abs=0.01)
    pd.testing.assert_frame_equal(base.drop(columns="age"), shifted.drop(columns="age"))


def test_concept_drift_keeps_features_but_changes_labels():
    base, drifted = churn(10_000, seed=3), churn(10_000, seed=3, concept_drift=1.0)
    features = [c for c in base.columns if c != "churn"]
    pd.testing.assert_frame_equal(base[features], drifted[features])
    assert (base["churn"] != drifted["churn"]).mean() > 0.2
    assert 0.20 <= drifted["churn"].mean() <= 0.35


def test_a_model_learns_churn_and_degrades_under_concept_drift(model):
    auc_same = _auc(model, churn(10_000, seed=2))
    auc_half = _auc(model, churn(10_000, seed=2, concept_drift=0.5))
    auc_drift = _auc(model, churn(10_000, seed=2, concept_drift=1.0))
    assert 0.75 < auc_same < 0.95
    assert auc_half < auc_same - 0.1
    assert auc_drift < auc_same - 0.2


def test_a_million_rows_are_fast():
    import time

    start = time.perf_counter()
    df = churn(1_000_000, seed=0)
    assert len(df) == 1_000_000
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    "kwargs, word",
    [({"n_rows": 0}, "n_rows"), ({"concept_drift": 1.5}, "concept_drift"), ({"concept_drift": -0.1}, "concept_drift")],
)
def test_churn_rejects_bad_knobs(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        churn(**kwargs)


def test_breast_cancer_has_target():
    df = load_sample("breast_cancer")
    assert SAMPLE_TARGETS["breast_cancer"] == "target"
    assert df.shape == (569, 31) and set(df["target"]) == {0, 1}


def test_load_sample_parses_knobs():
    df = load_sample("churn?n_rows=1000&seed=3&age_shift=10")
    pd.testing.assert_frame_equal(df, churn(1000, seed=3, age_shift=10.0))
    assert set(SAMPLE_TARGETS) == set(SAMPLES)


def test_canonical_spec_fills_defaults_and_orders_knobs():
    assert canonical_spec("churn") == canonical_spec("churn?seed=0&n_rows=5000")
    assert canonical_spec("churn?seed=1") != canonical_spec("churn?seed=2")
    assert canonical_spec("breast_cancer") == "breast_cancer"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("iris", ["iris", "churn", "breast_cancer"]),
        ("churn?rows=10", ["rows", "n_rows"]),
        ("churn?n_rows=ten", ["n_rows", "ten"]),
        ("churn?n_rows=1.5", ["n_rows"]),
        ("churn?age_shift=nan", ["age_shift"]),
        ("churn?n_rows=0", ["n_rows"]),
        ("breast_cancer?seed=1", ["seed"]),
    ],
)
def test_load_sample_errors_name_the_problem(spec, words):
    with pytest.raises(ConfigError) as info:
        load_sample(spec)
    for word in words:
        assert word in str(info.value)


def test_joint_shift_keeps_every_marginal_and_breaks_the_relation():
    clean, shifted = churn(2000, seed=3), churn(2000, seed=3, joint_shift=1.0)
    assert clean.drop(columns="total_charges").equals(shifted.drop(columns="total_charges"))
    assert sorted(clean["total_charges"]) == sorted(shifted["total_charges"])
    assert clean["total_charges"].corr(clean["tenure_months"]) > 0.8
    assert abs(shifted["total_charges"].corr(shifted["tenure_months"])) < 0.2


def test_attribution_shift_moves_customers_onto_support_calls():
    clean, shifted = churn(2000, seed=4), churn(2000, seed=4, attribution_shift=1.0)
    assert (shifted["contract"] == "one-year").all() and (shifted["tenure_months"] == 20).all()
    assert (shifted["support_calls"] == clean["support_calls"] + 6).all()
    assert clean["age"].equals(shifted["age"])


def test_senior_churn_changes_only_the_labels_of_seniors():
    clean, shifted = churn(4000, seed=5), churn(4000, seed=5, senior_churn=3.0)
    assert clean.drop(columns="churn").equals(shifted.drop(columns="churn"))
    seniors = clean["age"] >= 60
    assert shifted.loc[seniors, "churn"].mean() > clean.loc[seniors, "churn"].mean() + 0.3
    assert shifted.loc[~seniors, "churn"].equals(clean.loc[~seniors, "churn"])


@pytest.mark.parametrize("knob", ["joint_shift", "attribution_shift"])
def test_monitoring_knobs_are_shares(knob):
    with pytest.raises(ConfigError, match=f"{knob}=1.5 must be between 0 and 1"):
        churn(10, **{knob: 1.5})

"""Attribution drift: XGBoost's own SHAP on served rows, ranked and compared with the training
attribution by NDCG; catches a change of which features matter on sample:churn, quiet on clean."""

import json

import numpy as np
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.attribution import (
    DEFAULT_THRESHOLD,
    attribution_baseline,
    attribution_drift,
    load_attribution_baseline,
    ndcg,
    save_attribution_baseline,
)
from kfloop.schema import Feature, FeatureSchema
from kfloop.store import bundle
from kfloop.training.samples import churn
from tests.fakes.churn_model import churn_model


@pytest.fixture(scope="module")
def model():
    m = churn_model()
    m.baseline = attribution_baseline(m.booster, m.schema, m.schema.encode_frame(m.valid))
    return m


def _window(model, n=500, seed=1, **knobs):
    return model.schema.encode_frame(churn(n, seed=seed, **knobs))


def test_ndcg_follows_sagemakers_definition():
    base = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert ndcg(base, {"a": 9.0, "b": 5.0, "c": 0.1}) == 1.0  # same order, other values
    swapped = ndcg(base, {"a": 1.0, "b": 2.0, "c": 3.0})
    expected = (1 / np.log2(2) + 2 / np.log2(3) + 3 / np.log2(4)) / (3 / np.log2(2) + 2 / np.log2(3) + 1 / np.log2(4))
    assert swapped == pytest.approx(expected)
    assert ndcg(base, {"a": 3.0, "b": 1.0, "c": 2.0}) > swapped  # a smaller change costs less


def test_a_change_of_which_features_matter_is_caught(model):
    result = attribution_drift(model.booster, model.schema, model.baseline, _window(model, attribution_shift=1.0))
    assert result.status == "alert" and result.value < DEFAULT_THRESHOLD
    assert result.evidence["window_top"][0]["name"] == "support_calls"
    assert model.baseline["features"][0]["name"] == "contract"
    moved = {c["name"]: c for c in result.evidence["changes"]}
    assert moved["support_calls"]["window_rank"] < moved["support_calls"]["baseline_rank"]


def test_clean_windows_and_pure_data_drift_stay_quiet(model):
    clean = [attribution_drift(model.booster, model.schema, model.baseline, _window(model, 200, s)) for s in range(10)]
    assert all(r.status == "ok" and r.value > 0.97 for r in clean)
    aged = attribution_drift(model.booster, model.schema, model.baseline, _window(model, age_shift=15))
    assert aged.status == "ok"  # age barely matters to the model: its drift does not move the ranking


def test_a_small_window_is_insufficient(model):
    result = attribution_drift(model.booster, model.schema, model.baseline, _window(model, 30))
    assert result.status == "insufficient" and "30 rows" in result.reason


def test_the_baseline_round_trips_and_a_foreign_one_is_refused(model, tmp_path):
    assert load_attribution_baseline(tmp_path, model.schema) is None  # an older bundle: no signal
    save_attribution_baseline(model.baseline, tmp_path)
    assert load_attribution_baseline(tmp_path, model.schema)["features"] == model.baseline["features"]
    other = FeatureSchema("y", "binary", (Feature("x", "numeric"),), ("0", "1"))
    with pytest.raises(DataError, match="the model's features are \\['x'\\]"):
        load_attribution_baseline(tmp_path, other)
    (tmp_path / bundle.ATTRIBUTION_FILE).write_text(json.dumps({"features": [{"name": "x"}]}))
    with pytest.raises(DataError, match="not an attribution baseline"):
        load_attribution_baseline(tmp_path, other)


def test_bad_options_are_refused(model):
    with pytest.raises(ConfigError, match="threshold"):
        attribution_drift(model.booster, model.schema, model.baseline, _window(model), threshold=1.2)
    with pytest.raises(DataError, match="shape"):
        attribution_drift(model.booster, model.schema, model.baseline, np.zeros((200, 2)))

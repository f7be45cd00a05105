"""Bias drift: the gate's Clarify metrics per group on labeled windows of sample:churn; a change of
the labels of customers aged 60+ is caught, clean windows stay quiet, small groups are insufficient."""

import pandas as pd
import pytest

from kfloop.errors import DataError
from kfloop.monitoring.bias_drift import bias_drift
from kfloop.schema import infer_schema
from kfloop.training import booster as train
from kfloop.training.samples import churn
from tests.fakes.churn_model import churn_model
from tests.fakes.datasets import regression_data

SENIORS = [18, 60, 120]  # two groups: under 60, and 60 and over


@pytest.fixture(scope="module")
def model():
    return churn_model()


def _labeled(model, n, seed, **knobs) -> pd.DataFrame:
    """A window as labeled_frame gives it: raw features, the label as a class name, captured probabilities."""
    frame = churn(n, seed=seed, **knobs)
    pred = train.predict(model.booster, model.schema, model.schema.encode_frame(frame))
    return frame.assign(prediction=pred.tolist(), churn=frame["churn"].astype(str))


def test_a_group_specific_change_of_the_labels_is_caught(model):
    result = bias_drift(model.schema, _labeled(model, 1000, 7, senior_churn=2.0), "age", edges=SENIORS)
    assert result.status == "alert" and result.value >= 1
    seniors = next(v for v in result.evidence["violations"] if v["group"] == "(60, 120]")
    assert seniors["metric"] == "accuracy_difference" and seniors["value"] > 0.1  # the model errs more on them
    assert result.event_type == "io.kfloop.bias_drift.detected"


def test_clean_windows_stay_quiet(model):
    for edges in (SENIORS, None):
        results = [bias_drift(model.schema, _labeled(model, 1000, 100 + s), "age", edges=edges) for s in range(10)]
        assert [r.status for r in results] == ["ok"] * 10, edges


def test_a_group_with_too_few_rows_is_insufficient(model):
    result = bias_drift(model.schema, _labeled(model, 300, 7, senior_churn=2.0), "age", edges=SENIORS)
    assert result.status == "insufficient" and result.value is None
    assert "fewer than 50 labeled rows" in result.reason and "(60, 120]" in result.reason


def test_absent_without_a_sensitive_feature_or_for_a_regressor(model):
    assert bias_drift(model.schema, _labeled(model, 200, 1), "") is None
    data = regression_data(50)
    assert bias_drift(infer_schema(data, "target"), data, "region") is None


def test_a_window_without_the_needed_columns_is_refused(model):
    with pytest.raises(DataError, match="needs the columns \\['prediction'\\]"):
        bias_drift(model.schema, churn(100), "age")

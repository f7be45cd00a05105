"""Baseline statistics and constraints: computed from the training matrix and predictions, written as
two JSON files, loaded back equal, and refused with a clear error when they do not fit the schema."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from kfloop.errors import ConfigError
from kfloop.monitoring import constraints
from kfloop.schema import Feature, infer_schema
from kfloop.store.bundle import CONSTRAINTS_FILE, STATISTICS_FILE
from kfloop.training.samples import churn
from tests.fakes.churn_model import TRAIN_ROWS, VALID_ROWS
from tests.fakes.datasets import multiclass_data, regression_data
from tests.fakes.quality import churn_model, training_frame


def test_statistics_describe_the_training_data():
    model = churn_model()
    stats = model.baseline.statistics
    assert stats["rows"] == TRAIN_ROWS and stats["schema_sha256"] == constraints.schema_sha256(model.schema)
    by_name = {f["name"]: f for f in stats["features"]}
    assert [f["name"] for f in stats["features"]] == model.schema.names
    train = training_frame()
    age = by_name["age"]
    assert (age["min"], age["max"]) == pytest.approx((train["age"].min(), train["age"].max()), abs=1e-4)
    assert age["quantiles"]["0.5"] == pytest.approx(train["age"].median(), abs=0.05)
    assert age["missing_rate"] == 0
    shares = train["contract"].value_counts(normalize=True)
    assert by_name["contract"]["frequencies"] == pytest.approx(shares.to_dict(), abs=1e-9)
    predictions = stats["predictions"]
    assert predictions["kind"] == "probability" and predictions["outputs"] == ["1"]
    assert predictions["rows"] == "validation" and len(predictions["sample"]["1"]) == predictions["count"] == VALID_ROWS
    # the sample is of the model's answers on churn customers: its mean is near the churn rate
    assert np.mean(predictions["sample"]["1"]) == pytest.approx(train["churn"].mean(), abs=0.03)
    # at most MAX_PREDICTION_SAMPLE answers are kept
    many = constraints.compute(model.schema, model.schema.encode_frame(train), np.full((5000, 2), 0.5))
    assert many.prediction_sample.shape == (constraints.MAX_PREDICTION_SAMPLE, 1)


def test_constraints_hold_ranges_category_sets_and_tolerances():
    model = churn_model()
    doc = model.baseline.constraints
    by_name = {f["name"]: f for f in doc["features"]}
    train = training_frame()
    assert by_name["tenure_months"]["min"] == train["tenure_months"].min()
    assert by_name["tenure_months"]["max"] == train["tenure_months"].max()
    assert by_name["payment_method"]["categories"] == sorted(train["payment_method"].unique())
    assert by_name["age"]["max_missing_rate"] == constraints.DEFAULT_MISSING_TOLERANCE
    assert doc["prediction_drift"] == {"test": "ks", "p_val": 0.01, "correction": "bonferroni"}
    assert doc["min_rows"] == constraints.DEFAULT_MIN_ROWS


def test_missing_values_raise_the_allowed_missing_rate():
    frame = churn(2000, seed=1, missing_rate=0.2)
    schema = infer_schema(frame, "churn")
    X = schema.encode_frame(frame)
    baseline = constraints.compute(schema, X, np.full((len(X), 2), 0.5))
    feature = {f.name: f for f in baseline.features}["monthly_charges"]
    assert feature.missing_rate == pytest.approx(0.2, abs=0.02)
    assert feature.max_missing_rate == pytest.approx(feature.missing_rate + 0.05)


def test_saved_files_load_back_equal(tmp_path):
    model = churn_model()
    stats_path, constraints_path = constraints.save_baseline(model.baseline, tmp_path)
    assert (stats_path.name, constraints_path.name) == (STATISTICS_FILE, CONSTRAINTS_FILE)
    loaded = constraints.load_baseline(tmp_path, model.schema)
    assert loaded.features == model.baseline.features
    assert loaded.rows == TRAIN_ROWS and loaded.prediction_outputs == ("1",)
    np.testing.assert_allclose(loaded.prediction_sample, model.baseline.prediction_sample)
    assert loaded.constraints == model.baseline.constraints


def test_an_edited_constraint_is_what_loads(tmp_path):
    model = churn_model()
    constraints.save_baseline(model.baseline, tmp_path)
    doc = json.loads((tmp_path / CONSTRAINTS_FILE).read_text())
    doc["tolerances"]["out_of_range"] = 0.2
    doc["prediction_drift"]["p_val"] = 0.001
    (tmp_path / CONSTRAINTS_FILE).write_text(json.dumps(doc))
    loaded = constraints.load_baseline(tmp_path, model.schema)
    assert (loaded.out_of_range_tolerance, loaded.prediction_p_val) == (0.2, 0.001)


def test_a_bundle_without_the_files_has_no_baseline(tmp_path):
    assert constraints.load_baseline(tmp_path, churn_model().schema) is None


def test_files_of_another_schema_are_refused_naming_the_difference(tmp_path):
    model = churn_model()
    constraints.save_baseline(model.baseline, tmp_path)
    schema = model.schema
    extra = dataclasses.replace(schema, features=(*schema.features, Feature("region", "numeric")))
    with pytest.raises(
        ConfigError, match=r"does not match the model's schema.*schema features not in the file: \['region'\]"
    ):
        constraints.load_baseline(tmp_path, extra)
    retyped = dataclasses.replace(schema, features=(Feature("age", "categorical", ("old",)), *schema.features[1:]))
    with pytest.raises(ConfigError, match=r"kinds differ for \['age'\]"):
        constraints.load_baseline(tmp_path, retyped)
    other_categories = dataclasses.replace(
        schema,
        features=tuple(
            dataclasses.replace(f, categories=("a",)) if f.name == "contract" else f for f in schema.features
        ),
    )
    with pytest.raises(ConfigError, match="categories, classes, target or task differ"):
        constraints.load_baseline(tmp_path, other_categories)


def test_one_file_without_the_other_and_broken_files_are_refused(tmp_path):
    model = churn_model()
    constraints.save_baseline(model.baseline, tmp_path)
    (tmp_path / STATISTICS_FILE).unlink()
    with pytest.raises(ConfigError, match="has constraints.json but not statistics.json"):
        constraints.load_baseline(tmp_path, model.schema)
    constraints.save_baseline(model.baseline, tmp_path)
    (tmp_path / CONSTRAINTS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="constraints.json is not valid JSON"):
        constraints.load_baseline(tmp_path, model.schema)
    constraints.save_baseline(model.baseline, tmp_path)
    doc = json.loads((tmp_path / CONSTRAINTS_FILE).read_text())
    doc["tolerances"]["missing_rate"] = 5
    (tmp_path / CONSTRAINTS_FILE).write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="missing_tolerance 5.0 must be a share between 0 and 1"):
        constraints.load_baseline(tmp_path, model.schema)
    del doc["tolerances"]
    (tmp_path / CONSTRAINTS_FILE).write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="baseline files are not valid.*tolerances"):
        constraints.load_baseline(tmp_path, model.schema)


@pytest.mark.parametrize(
    "frame, target, outputs",
    [(regression_data(), "target", ("value",)), (multiclass_data(), "species", ("a", "b", "c"))],
    ids=["regression", "multiclass"],
)
def test_regression_keeps_values_and_multiclass_every_class(tmp_path, frame, target, outputs):
    schema = infer_schema(frame, target)
    X = schema.encode_frame(frame)
    rng = np.random.default_rng(0)
    pred = rng.normal(size=len(X)) if schema.task == "regression" else rng.dirichlet(np.ones(3), len(X))
    baseline = constraints.compute(schema, X, pred)
    assert baseline.prediction_outputs == outputs
    constraints.save_baseline(baseline, tmp_path)
    loaded = constraints.load_baseline(tmp_path, schema)
    assert loaded.prediction_sample.shape == (len(X), len(outputs))
    with pytest.raises(ConfigError, match="predictions must be"):
        constraints.compute(schema, X, np.ones((len(X), 5)))

"""Data quality rules: each one fails when violated (naming column and rule) and passes on clean data."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import DataQualityError
from kfloop.schema import infer_schema
from kfloop.training.samples import churn
from kfloop.training.validation import QualityRules, validate


@pytest.fixture
def clean() -> pd.DataFrame:
    return churn(500, seed=11)


@pytest.fixture
def schema(clean):
    return infer_schema(clean, "churn")


def rules_of(report) -> set[tuple[str | None, str]]:
    return {(v.column, v.rule) for v in report.violations}


def assert_only(report, column, rule):
    assert rules_of(report) == {(column, rule)}
    with pytest.raises(DataQualityError) as info:
        report.raise_for_violations()
    assert (info.value.column, info.value.rule) == (column, rule)
    assert rule in str(info.value) and (column is None or column in str(info.value))


def test_clean_data_passes(clean, schema):
    report = validate(clean, "churn", schema=schema)
    assert report.ok and report.violations == []
    report.raise_for_violations()


def test_non_empty(clean):
    assert_only(validate(clean.head(5), "churn"), None, "non_empty")
    assert validate(clean.head(5), "churn", QualityRules(min_rows=5)).ok


def test_target_present(clean):
    assert_only(validate(clean, "label"), "label", "target_present")


def test_target_missing(clean):
    df = clean.astype({"churn": float})
    df.loc[[3, 7], "churn"] = np.nan
    report = validate(df, "churn")
    assert_only(report, "churn", "target_missing")
    assert "2 of 500" in report.violations[0].detail


def test_required_columns(clean, schema):
    assert_only(
        validate(clean.drop(columns="tenure_months"), "churn", schema=schema), "tenure_months", "required_columns"
    )


def test_column_type(clean, schema):
    df = clean.astype({"monthly_charges": object})
    df.loc[10, "monthly_charges"] = "n/a"
    report = validate(df, "churn", schema=schema)
    assert_only(report, "monthly_charges", "column_type")
    assert "'n/a'" in report.violations[0].detail


def test_column_type_accepts_numeric_strings_and_categoricals_of_any_type(clean, schema):
    df = clean.astype({"age": str, "contract": "category"})
    assert validate(df, "churn", schema=schema).ok


def test_column_type_needs_a_schema(clean):
    df = clean.astype({"age": object})
    df.loc[0, "age"] = "old"
    assert validate(df, "churn").ok  # without a schema an object column is simply categorical


def test_missing_rate(clean):
    df = clean.copy()
    df.loc[:300, "support_calls"] = np.nan
    report = validate(df, "churn")
    assert_only(report, "support_calls", "missing_rate")
    assert "60.2%" in report.violations[0].detail
    assert validate(df, "churn", QualityRules(max_missing_rate=0.7)).ok


def test_all_missing_column_always_fails(clean):
    df = clean.assign(notes=None)
    assert_only(validate(df, "churn", QualityRules(max_missing_rate=1.0)), "notes", "missing_rate")


def test_constant_column(clean):
    df = clean.assign(region="north")
    assert_only(validate(df, "churn"), "region", "constant_column")
    assert validate(df, "churn", QualityRules(allow_constant=True)).ok


def test_duplicate_rows(clean):
    df = pd.concat([clean, clean.head(300)], ignore_index=True)
    report = validate(df, "churn", QualityRules(max_duplicate_rate=0.1))
    assert_only(report, None, "duplicate_rows")
    assert report.duplicate_rate == pytest.approx(300 / 800)
    assert validate(df, "churn").ok  # default allows up to half


def test_several_violations_are_all_reported(clean, schema):
    df = clean.drop(columns="age").assign(region="north", churn=np.nan)
    assert rules_of(validate(df, "churn", schema=schema)) == {
        ("churn", "target_missing"),
        ("age", "required_columns"),
        ("region", "constant_column"),
    }


def test_column_stats(clean):
    report = validate(clean, "churn")
    age = report.columns["age"]
    assert age.min == clean["age"].min() and age.max == clean["age"].max()
    assert age.mean == pytest.approx(clean["age"].mean())
    assert age.missing_rate == 0.0 and age.n_unique == clean["age"].nunique()
    contract = report.columns["contract"]
    assert contract.n_unique == 3 and contract.min is None and contract.dtype == "object"


def test_report_serializes(clean):
    df = clean.assign(region="north")
    doc = json.loads(json.dumps(validate(df, "churn").to_dict()))
    assert doc["ok"] is False and doc["n_rows"] == 500
    assert doc["violations"] == [{"column": "region", "rule": "constant_column", "detail": "every value is the same"}]
    assert set(doc["columns"]) == set(df.columns)


def test_markdown_lists_violations_and_columns(clean):
    text = validate(clean.assign(region="north"), "churn").to_markdown()
    assert text.startswith("## Data quality: failed")
    assert "| constant_column | region |" in text
    for column in clean.columns:
        assert f"| {column} |" in text
    assert validate(clean, "churn").to_markdown().startswith("## Data quality: passed")


def test_empty_frame_reports_only_non_empty(clean):
    assert_only(validate(clean.head(0), "churn"), None, "non_empty")


def test_a_million_rows_are_fast():
    df = churn(1_000_000, seed=0)
    schema = infer_schema(df.head(1000), "churn")
    start = time.perf_counter()
    report = validate(df, "churn", schema=schema)
    assert report.ok and report.n_rows == 1_000_000
    assert time.perf_counter() - start < 5.0

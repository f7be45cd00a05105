"""Retraining data: each strategy's rows (original data, labeled captured traffic, a time window),
written as a Parquet file the training pipeline loads and validates, locally or on S3."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.feedback import FeedbackStore
from kfloop.retraining.policy import DATA_STRATEGIES
from kfloop.retraining.training_data import build_training_data
from kfloop.schema import infer_schema
from kfloop.store.objects import open_store
from kfloop.training.data import load_source
from kfloop.training.samples import churn
from kfloop.training.validation import validate

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
ORIGINAL_ROWS, OLD, RECENT = 400, 100, 200


@pytest.fixture(scope="module")
def original() -> pd.DataFrame:
    return churn(n_rows=ORIGINAL_ROWS, seed=0)


@pytest.fixture(scope="module")
def schema(original):
    return infer_schema(original, "churn")


@pytest.fixture
def original_source(tmp_path, original) -> str:
    path = tmp_path / "original.csv"
    original.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def served() -> pd.DataFrame:
    """Traffic after a concept drift: OLD rows 10-20 days before NOW, RECENT rows in the last 5 days."""
    frame = churn(n_rows=OLD + RECENT, seed=1, concept_drift=1.0)
    frame.loc[0, "contract"] = "lifetime"  # a category the schema has not seen
    return frame


def serve(settings, schema, served: pd.DataFrame, labeled: range) -> None:
    """Capture every served row (request ``r<i>``) and post labels for the rows in ``labeled``."""
    store = open_store(settings)
    records = []
    for i, row in enumerate(served.drop(columns=["churn"]).to_dict("records")):
        when = NOW - (dt.timedelta(days=20 - i / 10) if i < OLD else dt.timedelta(days=5 - (i - OLD) / 50))
        records.append(
            capture_record(
                "churn",
                str(1 + i % 2),
                row,
                [0.5, 0.5],
                request_id=f"r{i}:0",
                time=when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            )
        )
    with CaptureWriter(store, "churn", batch_size=10_000, flush_interval_s=0.05) as writer:
        writer.add(records)
    FeedbackStore(store).add(
        "churn", schema, [{"request_id": f"r{i}:0", "label": int(served["churn"][i])} for i in labeled]
    )


LABELED = range(0, OLD + 150)  # every old row and the first 150 recent ones


@pytest.mark.parametrize(
    "strategy, kwargs, original_rows, captured_rows",
    [
        ("combined", {}, ORIGINAL_ROWS, OLD + 150),
        ("recent", {}, 0, OLD + 150),
        ("window", {}, ORIGINAL_ROWS, 150),
        ("window", {"min_window_rows": 150}, 0, 150),
        ("window", {"window_days": 30}, ORIGINAL_ROWS, OLD + 150),
    ],
)
def test_strategies(
    local_settings, schema, served, original, original_source, tmp_path, strategy, kwargs, original_rows, captured_rows
):
    serve(local_settings, schema, served, LABELED)
    out = tmp_path / "out" / "train.parquet"
    result = build_training_data(strategy, local_settings, "churn", schema, original_source, out, now=NOW, **kwargs)
    assert result == {
        "source": str(out.resolve()),
        "rows": original_rows + captured_rows,
        "original_rows": original_rows,
        "captured_rows": captured_rows,
        "strategy": strategy,
    }
    frame = load_source(result["source"], local_settings).frame
    assert list(frame.columns) == [*schema.names, "churn"] and len(frame) == result["rows"]
    assert validate(frame, "churn", schema=schema).ok
    assert frame["churn"].dtype == "int64" and frame["tenure_months"].dtype.kind in "if"
    expected = pd.concat([original.head(original_rows), captured_rows_of(served, strategy, captured_rows)])
    pd.testing.assert_frame_equal(frame, expected.reset_index(drop=True), check_dtype=False)


def captured_rows_of(served: pd.DataFrame, strategy: str, n: int) -> pd.DataFrame:
    """The labeled served rows the strategy keeps: the last ``n`` labeled ones, in time order."""
    return served.iloc[list(LABELED)[-n:]]


def test_unseen_categories_and_labels_of_served_rows_are_kept(
    local_settings, schema, served, original_source, tmp_path
):
    serve(local_settings, schema, served, range(0, 30))
    result = build_training_data("recent", local_settings, "churn", schema, original_source, tmp_path / "t.parquet")
    frame = load_source(result["source"], local_settings).frame
    assert frame["contract"][0] == "lifetime" and frame["churn"].tolist() == served["churn"][:30].tolist()


def test_no_labeled_traffic_is_a_clear_error(local_settings, schema, served, original_source, tmp_path):
    serve(local_settings, schema, served, range(0, 10))  # only old rows are labeled
    for strategy, message in [
        ("window", "no labeled captured traffic in the 7 days before 2024-06-01"),
        ("recent", "no labeled captured traffic;"),
    ]:
        with pytest.raises(DataError, match=message):
            build_training_data(
                strategy,
                local_settings,
                "other" if strategy == "recent" else "churn",
                schema,
                original_source,
                tmp_path / "t.parquet",
                now=NOW,
                min_window_rows=0,
            )
    assert not (tmp_path / "t.parquet").exists()


def test_bad_parameters_and_original_data(local_settings, schema, original, tmp_path):
    with pytest.raises(ConfigError, match=r"'latest' is not one of \['combined', 'recent', 'window'\]"):
        build_training_data("latest", local_settings, "churn", schema, "sample:churn", tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match="window_days 0"):
        build_training_data(
            "window", local_settings, "churn", schema, "sample:churn", tmp_path / "t.parquet", window_days=0
        )
    partial = tmp_path / "partial.csv"
    original.drop(columns=["age", "contract"]).to_csv(partial, index=False)
    with pytest.raises(DataError, match=r"lacks the schema's columns \['age', 'contract'\]"):
        build_training_data("combined", local_settings, "churn", schema, str(partial), tmp_path / "t.parquet")
    assert DATA_STRATEGIES == ("combined", "recent", "window")


def test_combined_data_on_s3(s3_settings, schema, served, tmp_path):
    serve(s3_settings, schema, served, range(OLD, OLD + 50))
    result = build_training_data(
        "combined", s3_settings, "churn", schema, "sample:churn?n_rows=300", tmp_path / "t.parquet", now=NOW
    )
    assert result["source"] == f"s3://{s3_settings.s3_bucket}/retraining/churn/20240601T120000000000Z.parquet"
    assert (result["rows"], result["original_rows"], result["captured_rows"]) == (350, 300, 50)
    frame = load_source(result["source"], s3_settings).frame
    assert len(frame) == 350 and validate(frame, "churn", schema=schema).ok

"""Calibrated performance estimation: CBPE (isotonic calibrator per class) for classifiers and DLE
(residual models) for regressors, fitted on the validation split, stored as JSON/UBJSON, refused
when they do not match the model, and compared with the realized metrics when labels arrive."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import ChecksumError, DataError
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.estimation import estimate_vs_realized, estimated_quality_signal, fit_estimator, load_estimator
from kfloop.monitoring.feedback import FeedbackStore, labeled_frame
from kfloop.monitoring.quality import estimate_accuracy, quality_metrics
from kfloop.schema import infer_schema
from kfloop.store import bundle
from kfloop.store.objects import LocalStore
from kfloop.training import booster as train
from kfloop.training.samples import churn
from tests.fakes.churn_model import churn_model
from tests.fakes.datasets import multiclass_data, noisy, regression_data


@pytest.fixture(scope="module")
def model():
    m = churn_model()
    m.estimator = fit_estimator(m.booster, m.schema, m.valid)
    return m


def _scored(model, frame):
    return train.predict(model.booster, model.schema, model.schema.encode_frame(frame))


def test_cbpe_estimates_the_realized_metrics_on_clean_traffic(model):
    frame = churn(2000, seed=11)
    pred = _scored(model, frame)
    estimated = model.estimator.estimate(pred)
    realized = quality_metrics(model.schema, frame["churn"].tolist(), pred.tolist())
    for metric, tolerance in (("accuracy", 0.03), ("f1", 0.05), ("auc", 0.04)):
        assert abs(estimated[metric] - realized[metric]) < tolerance, metric


def test_calibration_corrects_an_overconfident_model():
    data = noisy(3000, seed=2)
    schema = infer_schema(data, "target")
    fit, valid, test = data.iloc[:600], data.iloc[600:1500], data.iloc[1500:]
    booster = train.train(schema, fit, None, train.TrainParams(n_estimators=150, nthread=1))
    pred = train.predict(booster, schema, schema.encode_frame(test))
    realized = quality_metrics(schema, test["target"].tolist(), pred.tolist())["accuracy"]
    uncalibrated = estimate_accuracy(pred)
    calibrated = fit_estimator(booster, schema, valid).estimate(pred)["accuracy"]
    assert uncalibrated - realized > 0.1  # the overfitted booster believes itself
    assert abs(calibrated - realized) < 0.04


def test_the_signal_alerts_on_rows_the_model_is_unsure_of_and_not_on_clean_ones(model):
    clean = [estimated_quality_signal(model.estimator, _scored(model, churn(500, seed=s))) for s in range(20, 30)]
    assert all(r.status == "ok" for r in clean)
    shifted = estimated_quality_signal(model.estimator, _scored(model, churn(500, seed=5, attribution_shift=1.0)))
    assert shifted.status == "alert" and shifted.value < shifted.threshold
    assert shifted.threshold == pytest.approx(model.estimator.reference["estimated_accuracy"] - 0.05)
    assert shifted.event_type == "io.kfloop.estimated_quality.dropped"
    few = estimated_quality_signal(model.estimator, _scored(model, churn(20, seed=5)))
    assert few.status == "insufficient" and "20 predictions" in few.reason


def test_multiclass_calibration_per_class():
    data = multiclass_data(3000, seed=4)
    schema = infer_schema(data, "species")
    booster = train.train(schema, data.iloc[:1500], data.iloc[1500:2200], train.TrainParams(nthread=1))
    estimator = fit_estimator(booster, schema, data.iloc[1500:2200])
    assert sorted(estimator.curves) == ["a", "b", "c"]
    test = data.iloc[2200:]
    pred = train.predict(booster, schema, schema.encode_frame(test))
    calibrated = estimator.calibrate(pred)
    assert np.allclose(calibrated.sum(axis=1), 1.0)
    realized = quality_metrics(schema, test["species"].tolist(), pred.tolist())
    assert abs(estimator.estimate(pred)["accuracy"] - realized["accuracy"]) < 0.04


def _noisier_with_x1(n, seed):
    """regression_data whose noise grows with |x1|: the error depends on where the rows are."""
    data = regression_data(n, seed=seed)
    noise = np.random.default_rng(seed + 1).normal(size=n) * 2.0 * np.abs(data["x1"])
    return data.assign(target=data["target"] + noise)


def test_dle_estimates_a_regressors_error_and_sees_where_it_errs_more(tmp_path):
    data = _noisier_with_x1(4000, seed=1)
    schema = infer_schema(data, "target")
    booster = train.train(schema, data.iloc[:2000], data.iloc[2000:3000], train.TrainParams(nthread=1))
    estimator = fit_estimator(booster, schema, data.iloc[2000:3000])
    estimator.save(tmp_path)
    loaded = load_estimator(tmp_path, schema)
    test = data.iloc[3000:]
    X = schema.encode_frame(test)
    pred = train.predict(booster, schema, X)
    realized = quality_metrics(schema, test["target"].tolist(), pred.tolist())
    estimated = loaded.estimate(pred, X)
    assert estimated == estimator.estimate(pred, X)  # the UBJSON models predict the same
    assert abs(estimated["mae"] - realized["mae"]) / realized["mae"] < 0.15
    assert abs(estimated["rmse"] - realized["rmse"]) / realized["rmse"] < 0.15
    # covariate shift towards rows where the model errs more (large |x1|): seen without labels
    far = test[test["x1"].abs() > 1.0]
    Xf = schema.encode_frame(far)
    signal = estimated_quality_signal(loaded, train.predict(booster, schema, Xf), Xf)
    assert signal.status == "alert" and signal.direction == "above"
    realized_far = quality_metrics(schema, far["target"].tolist(), train.predict(booster, schema, Xf).tolist())
    assert abs(signal.value - realized_far["mae"]) / realized_far["mae"] < 0.2
    assert estimated_quality_signal(loaded, pred, X).status == "ok"


def test_stored_as_json_round_trips_and_a_foreign_calibrator_is_refused(model, tmp_path):
    assert load_estimator(tmp_path, model.schema) is None  # an older bundle: the signal is absent
    model.estimator.save(tmp_path)
    doc = json.loads((tmp_path / bundle.CALIBRATION_FILE).read_text())
    assert doc["method"] == "cbpe" and list(doc["curves"]) == ["1"]
    pred = _scored(model, model.test)
    assert load_estimator(tmp_path, model.schema).estimate(pred) == model.estimator.estimate(pred)
    other = infer_schema(churn(50).assign(churn=lambda f: f["churn"].map({0: "no", 1: "yes"})), "churn")
    with pytest.raises(DataError, match="classes \\['0', '1'\\], the model's \\['no', 'yes'\\]"):
        load_estimator(tmp_path, other)
    fewer = infer_schema(churn(50).drop(columns="age"), "churn")
    with pytest.raises(DataError, match="does not match the model's schema: features"):
        load_estimator(tmp_path, fewer)
    doc["curves"]["1"]["y"] = list(reversed(doc["curves"]["1"]["y"]))
    (tmp_path / bundle.CALIBRATION_FILE).write_text(json.dumps(doc))
    with pytest.raises(DataError, match="not increasing"):
        load_estimator(tmp_path, model.schema)


def test_a_changed_calibrator_in_a_bundle_fails_its_checksum(model, tmp_path):
    model.estimator.save(tmp_path)
    (tmp_path / bundle.MODEL_FILE).write_bytes(b"model")
    bundle.write_manifest(tmp_path)
    doc = json.loads((tmp_path / bundle.CALIBRATION_FILE).read_text())
    doc["reference"]["estimated_accuracy"] = 0.99
    (tmp_path / bundle.CALIBRATION_FILE).write_text(json.dumps(doc))
    with pytest.raises(ChecksumError, match="does not match the bundle's manifest"):
        load_estimator(tmp_path, model.schema)


def test_estimate_vs_realized_over_real_captures_and_labels(model, tmp_path):
    """Captures written by the CaptureWriter, labels through the FeedbackStore, joined by labeled_frame."""
    store = LocalStore(tmp_path / "store")
    clean, drifted = churn(300, seed=31), churn(300, seed=32, concept_drift=1.0)
    frame = pd.concat([clean, drifted], ignore_index=True)
    pred = _scored(model, frame)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    records = [
        capture_record(
            "churn",
            "1",
            row,
            pred[i].tolist(),
            request_id=f"r{i}:0",
            time=(start + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )  # fmt: skip
        for i, row in enumerate(frame.drop(columns="churn").to_dict("records"))
    ]
    writer = CaptureWriter(store, "churn", batch_size=10_000, flush_interval_s=0.05)
    writer.add(records)
    assert writer.close()
    labels = [{"request_id": f"r{i}:0", "label": int(y)} for i, y in enumerate(frame["churn"])]
    FeedbackStore(store).add("churn", model.schema, labels)
    rows = estimate_vs_realized(model.estimator, labeled_frame(store, "churn", model.schema), window=300)
    assert [(r["model_version"], r["window_index"], r["n"]) for r in rows] == [("1", 0, 300), ("1", 1, 300)]
    assert rows[0]["start"] == "2026-01-01T00:00:00.000000Z" and rows[1]["end"] == "2026-01-01T00:09:59.000000Z"
    assert abs(rows[0]["estimated"]["accuracy"] - rows[0]["realized"]["accuracy"]) < 0.06
    # concept drift: the estimate cannot see it, the labels do
    assert rows[1]["estimated"]["accuracy"] - rows[1]["realized"]["accuracy"] > 0.2
    assert set(rows[1]["realized"]) == {"accuracy", "f1", "auc"}

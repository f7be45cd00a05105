"""The baseline step writes the drift reference and, beside it, the baseline statistics and
constraints; the prediction reference is the validation split's; the register step's bundle lists
them in its manifest, and a changed constraint file fails verification."""

from __future__ import annotations

import json

import pytest

from kfloop.errors import ChecksumError
from kfloop.monitoring.constraints import load_baseline
from kfloop.schema import infer_schema
from kfloop.steps.baseline import fit_drift_baseline
from kfloop.steps.register import assemble_bundle
from kfloop.steps.train import train_model
from kfloop.store.bundle import CONSTRAINTS_FILE, DRIFT_DIR, STATISTICS_FILE, load_schema, verify_bundle
from kfloop.training.samples import churn


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    df = churn(1500, seed=3)
    df.iloc[:1000].to_parquet(root / "train.parquet")
    df.iloc[1000:].to_parquet(root / "valid.parquet")
    (root / "schema.json").write_text(json.dumps(infer_schema(df, "churn").to_dict()))
    params = {"n_estimators": 20, "max_depth": 3, "nthread": 1}
    train_model(
        str(root / "train.parquet"), str(root / "valid.parquet"), str(root / "schema.json"), params, str(root / "model")
    )
    return root


def test_the_step_writes_statistics_and_constraints_with_held_out_predictions(trained, tmp_path):
    out = tmp_path / "drift"
    fit_drift_baseline(
        str(trained / "model"),
        str(trained / "train.parquet"),
        str(out),
        backend="scipy",
        valid_path=str(trained / "valid.parquet"),
    )
    statistics = json.loads((out / STATISTICS_FILE).read_text())
    assert statistics["rows"] == 1000
    assert (statistics["predictions"]["rows"], statistics["predictions"]["count"]) == ("validation", 500)
    baseline = load_baseline(out, load_schema(trained / "model"))
    assert baseline.prediction_sample.shape == (500, 1)
    # without a validation split the training rows' predictions are the reference
    fit_drift_baseline(str(trained / "model"), str(trained / "train.parquet"), str(tmp_path / "d2"), backend="scipy")
    statistics = json.loads((tmp_path / "d2" / STATISTICS_FILE).read_text())
    assert (statistics["predictions"]["rows"], statistics["predictions"]["count"]) == ("training", 1000)


def test_the_bundle_manifest_covers_the_baseline_files(trained, tmp_path):
    drift = tmp_path / "drift"
    fit_drift_baseline(
        str(trained / "model"),
        str(trained / "train.parquet"),
        str(drift),
        backend="scipy",
        valid_path=str(trained / "valid.parquet"),
    )
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({"task": "binary", "metrics": {"auc": 0.8}}))
    bundle = assemble_bundle(str(trained / "model"), str(evaluation), None, str(drift), tmp_path / "bundle")
    files = verify_bundle(bundle)["files"]
    assert {f"{DRIFT_DIR}/{STATISTICS_FILE}", f"{DRIFT_DIR}/{CONSTRAINTS_FILE}"} <= set(files)
    path = bundle / DRIFT_DIR / CONSTRAINTS_FILE
    doc = json.loads(path.read_text())
    doc["tolerances"]["out_of_range"] = 1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ChecksumError, match="constraints.json: checksum mismatch"):
        verify_bundle(bundle)

"""The whole training pipeline run for real under kfp.local, on small generated data."""

from __future__ import annotations

import json

import pytest

from kfloop.monitoring.attribution import load_attribution_baseline
from kfloop.monitoring.constraints import load_baseline
from kfloop.monitoring.estimation import load_estimator
from kfloop.pipelines.run_local import PipelineRunFailed, run_local
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from kfloop.training import samples
from tests.fakes.datasets import noisy, regression_data

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

SMALL = "sample:churn?n_rows=1500&seed=1"


def _registry(settings) -> Registry:
    return Registry(open_store(settings))


def test_a_good_run_registers_version_1_with_lineage(local_settings, tmp_path):
    result = run_local(local_settings, {"source": SMALL, "sensitive_feature": "contract"}, progress=lambda _: None)
    assert result.gate["passed"] and result.registered == "churn:1"
    record = _registry(local_settings).get("churn", 1)
    assert record.stage == "staging"
    assert record.lineage["data_uri"].startswith("sample:churn")
    assert record.lineage["pipeline_run_name"] == result.run_dir.name
    assert record.lineage["parameters"]["n_estimators"] == 200
    assert {"model.ubj", "schema.json", "metrics.json", "bias.json", "drift/kfloop_detector.json"} <= set(record.files)
    _, path = _registry(local_settings).fetch_bundle("churn:1", tmp_path / "bundle")
    assert bundle.load_schema(path).target == "churn"
    # the signal-baselines step's references, in the bundle and its manifest, loadable
    assert load_estimator(path, bundle.load_schema(path)).curves.keys() == {"1"}
    assert load_attribution_baseline(path, bundle.load_schema(path))["features"][0]["name"] == "contract"
    assert result.gate["passed"] and "bias" not in result.gate["reason"]  # bias_action "": reported only
    # the baseline constraints the transformer checks windows against, predictions on the valid split
    baseline = load_baseline(path / bundle.DRIFT_DIR, bundle.load_schema(path))
    assert baseline is not None and baseline.statistics["predictions"]["rows"] == "validation"
    # the KFP Metrics and ClassificationMetrics artifacts the dashboard draws
    artifacts = json.loads((result.run_dir / "evaluate" / "executor_output.json").read_text())["artifacts"]
    assert artifacts["metrics"]["artifacts"][0]["metadata"]["auc"] == pytest.approx(result.gate["candidate"])
    classification = artifacts["classification_metrics"]["artifacts"][0]["metadata"]
    assert {"confusionMatrix", "confidenceMetrics"} <= set(classification)


def test_a_regression_data_set_registers_with_the_default_gate(local_settings, tmp_path):
    regression_data(n=400).to_csv(tmp_path / "reg.csv", index=False)
    params = {"source": str(tmp_path / "reg.csv"), "target": "target", "model_name": "reg"}
    result = run_local(local_settings, params, progress=lambda _: None)
    assert result.gate["passed"], result.gate["reason"]
    assert result.gate["metric"] == "rmse" and result.gate["threshold_rule"].startswith("auto:")
    assert result.gate["candidate"] < result.gate["threshold"] < result.gate["baseline"]
    assert "naive baseline (predicting the training mean" in result.gate["reason"]
    assert result.registered == "reg:1"
    record = _registry(local_settings).get("reg", 1)
    assert record.metrics["baseline"]["metric"] == "rmse"
    assert {bundle.CALIBRATION_FILE, bundle.RESIDUAL_ABS_FILE, bundle.RESIDUAL_SQ_FILE} <= set(record.files)


def test_a_candidate_breaking_the_four_fifths_rule_is_not_registered_with_bias_action_reject(local_settings):
    params = {"source": SMALL, "sensitive_feature": "contract", "bias_action": "reject"}
    result = run_local(local_settings, params, progress=lambda _: None)
    assert not result.gate["passed"] and result.registered is None
    assert result.gate["reason"].startswith("bias check failed (bias limits broken for contract: group ")
    assert "four-fifths rule: DI" in result.gate["reason"]
    assert _registry(local_settings).list_versions() == []


def test_a_run_worse_than_production_registers_nothing(local_settings):
    run_local(local_settings, {"source": SMALL}, progress=lambda _: None)
    _registry(local_settings).set_stage("churn", 1, "production")
    weak = {"source": SMALL, "n_estimators": 1, "max_depth": 1, "threshold": 0.5, "tolerance": 0.01}
    result = run_local(local_settings, weak, progress=lambda _: None)
    assert not result.gate["passed"] and "production" in result.gate["reason"]
    assert result.registered is None
    assert _registry(local_settings).version_numbers("churn") == [1]


def test_bad_data_fails_with_the_column_and_rule_and_registers_nothing(local_settings, tmp_path):
    frame = samples.churn(n_rows=500)
    frame["tenure_months"] = None  # an all-missing column
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(PipelineRunFailed, match="tenure_months.*|missing_rate"):
        run_local(local_settings, {"source": str(path), "target": "churn"}, progress=lambda _: None)
    assert _registry(local_settings).list_versions() == []


def test_the_pipeline_registers_on_s3(s3_settings, tmp_path):
    result = run_local(s3_settings, {"source": SMALL}, progress=lambda _: None)
    assert result.registered == "churn:1"
    record = _registry(s3_settings).get("churn", 1)
    assert record.bundle_uri.startswith(f"s3://{s3_settings.s3_bucket}/")
    assert not (tmp_path / "home" / "models").exists()  # nothing went to the local folder


def test_an_unknown_sample_fails_with_progress_and_a_clear_message(local_settings):
    lines: list[str] = []
    with pytest.raises(PipelineRunFailed, match="nope"):
        run_local(local_settings, {"source": "sample:nope"}, progress=lines.append)
    assert any("process" in line and "FAILED" in line for line in lines)


def test_a_tuned_run_trains_with_the_best_trial_and_records_the_search(local_settings, tmp_path):

    path = tmp_path / "noisy.csv"
    noisy(1000, seed=5).to_csv(path, index=False)
    arguments = {"source": str(path), "target": "target", "model_name": "noisy", "tuning_trials": 6}
    result = run_local(local_settings, {**arguments, "tuning_budget_seconds": 120.0}, progress=lambda _: None)
    assert result.registered == "noisy:1"
    record = _registry(local_settings).get("noisy", 1)
    tuning = record.lineage["tuning"]
    assert tuning["trials_run"] == 6 and tuning["improved"]
    assert tuning["best"]["value"] < tuning["baseline"]["value"]
    for name, value in tuning["best"]["params"].items():  # train used the best trial's values
        assert record.lineage["parameters"][name] == value
    assert "tuning.json" in record.files  # every trial, kept in the bundle
    # each trial is a KFP metric of the tune step
    outputs = json.loads((result.run_dir / "tune" / "executor_output.json").read_text())["artifacts"]
    metrics = outputs["metrics"]["artifacts"][0]["metadata"]
    assert {f"trial_{i:03d}_valid_logloss" for i in range(6)} <= set(metrics)
    assert metrics["best_valid_logloss"] == pytest.approx(tuning["best"]["value"])
    assert metrics["tuning_trials"] == 6
    assert not (local_settings.home / "runs" / ".kfp_cache").exists()  # kfp.local's cache stays off

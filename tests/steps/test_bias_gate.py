"""The bias gate through the real process -> train -> evaluate -> signal-baselines -> register steps:
a candidate whose predictions break the four-fifths rule for a sensitive feature is rejected, held for
approval or only reported, by ``bias_action``; the signal baselines land in the registered bundle."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import ConfigError
from kfloop.monitoring.attribution import load_attribution_baseline
from kfloop.monitoring.estimation import load_estimator
from kfloop.steps.baseline import fit_drift_baseline
from kfloop.steps.evaluate import evaluate_model
from kfloop.steps.process import process
from kfloop.steps.register import register
from kfloop.steps.signals import fit_signal_baselines
from kfloop.steps.train import train_model
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from kfloop.training.evaluate import AUTO_THRESHOLD
from tests.fakes.datasets import binary_data


def _data() -> pd.DataFrame:
    """binary_data: "plan" drives the label (pro customers are positive far more often), "cohort" is noise."""
    frame = binary_data(2000, seed=3)
    return frame.assign(cohort=np.random.default_rng(9).choice(["east", "west"], size=len(frame)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bias")
    _data().to_csv(tmp / "data.csv", index=False)
    paths = {k: str(tmp / f"{k}.parquet") for k in ("train", "valid", "test")}
    from kfloop.config import Settings

    settings = Settings(home=tmp / "home-unused")
    process(
        str(tmp / "data.csv"), "label", settings, paths["train"], paths["valid"], paths["test"],
        str(tmp / "schema.json"), str(tmp / "quality.md"),
    )  # fmt: skip
    train_model(paths["train"], paths["valid"], str(tmp / "schema.json"), {"nthread": 1}, str(tmp / "model"))
    fit_drift_baseline(str(tmp / "model"), paths["train"], str(tmp / "drift"), backend="scipy")
    fit_signal_baselines(str(tmp / "model"), paths["valid"], str(tmp / "signals"))
    return tmp, paths


def _evaluate(trained, settings, sensitive, **bias):
    tmp, paths = trained
    out = Path(tempfile.mkdtemp(dir=tmp)) / "evaluation.json"
    doc = evaluate_model(
        str(tmp / "model"), paths["test"], "plans", settings, str(out), AUTO_THRESHOLD, 0.01,
        train_path=paths["train"], sensitive_feature=sensitive, bias=bias,
    )  # fmt: skip
    return doc, out


def _register(trained, settings, evaluation):
    tmp, _ = trained
    return register(
        "plans", settings, str(tmp / "model"), str(evaluation), None, str(tmp / "drift"), {"data_uri": "x"},
        signals_dir=str(tmp / "signals"),
    )  # fmt: skip


def test_reject_fails_the_gate_on_the_four_fifths_rule(trained, local_settings):
    doc, _ = _evaluate(trained, local_settings, "plan", action="reject")
    bias = doc["bias_gate"]
    assert not bias["passed"] and not doc["gate"]["passed"]
    rules = " ".join(v["rule"] for v in bias["violations"])
    assert "group basic: four-fifths rule: DI" in rules and "< 0.8" in rules
    assert doc["gate"]["reason"].startswith("bias check failed (bias limits broken for plan")


def test_approval_registers_the_candidate_as_pending_approval(trained, local_settings):
    doc, evaluation = _evaluate(trained, local_settings, "plan", action="approval")
    assert doc["gate"]["passed"] and "pending approval: bias limits broken" in doc["gate"]["reason"]
    record = _register(trained, local_settings, evaluation)
    assert record.stage == "pending-approval"
    assert record.lineage["approval_reason"].startswith("bias limits broken for plan")


def test_report_only_by_default_and_a_fair_feature_passes(trained, local_settings):
    doc, evaluation = _evaluate(trained, local_settings, "plan")
    assert doc["gate"]["passed"] and doc["bias_gate"]["action"] == "" and not doc["bias_gate"]["passed"]
    assert _register(trained, local_settings, evaluation).stage == "staging"
    fair, _ = _evaluate(trained, local_settings, "cohort", action="reject")
    assert fair["gate"]["passed"] and fair["bias_gate"]["passed"], fair["bias_gate"]["reason"]
    assert "bias within limits for cohort (2 groups checked)" == fair["bias_gate"]["reason"]
    none, _ = _evaluate(trained, local_settings, "")
    assert none["bias_gate"] is None  # no sensitive feature: no check, not a pass


def test_bad_bias_parameters_are_refused_before_scoring(trained, local_settings):
    with pytest.raises(ConfigError, match="bias_action 'block'"):
        _evaluate(trained, local_settings, "plan", action="block")
    with pytest.raises(ConfigError, match="min_disparate_impact 1.5 is above max_disparate_impact 1.25"):
        _evaluate(trained, local_settings, "plan", min_disparate_impact=1.5)
    with pytest.raises(ConfigError, match="sensitive_feature 'region' is not a column"):
        _evaluate(trained, local_settings, "region")


def test_the_registered_bundle_carries_the_signal_baselines(trained, local_settings, tmp_path):
    _, evaluation = _evaluate(trained, local_settings, "")
    record = _register(trained, local_settings, evaluation)
    _, path = Registry(open_store(local_settings)).fetch_bundle(record.ref, tmp_path / "fetched")
    manifest = bundle.verify_bundle(path)
    assert {bundle.ATTRIBUTION_FILE, bundle.CALIBRATION_FILE} <= set(manifest["files"])
    schema = bundle.load_schema(path)
    assert load_estimator(path, schema).reference["n"] == len(pd.read_parquet(trained[1]["valid"]))
    assert [f["name"] for f in load_attribution_baseline(path, schema)["features"]][0] in ("x1", "plan", "x2")

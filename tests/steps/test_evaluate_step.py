"""The gate with the pipeline's default parameters, through the real process -> train -> evaluate ->
register steps, on small data sets generated here: one per task, and one the model cannot learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfloop.pipelines.parameters import parameter_types
from kfloop.pipelines.training import YAML_PATH
from kfloop.steps.analyze import analyze
from kfloop.steps.baseline import fit_drift_baseline
from kfloop.steps.common import read_json
from kfloop.steps.evaluate import evaluate_model
from kfloop.steps.process import process
from kfloop.steps.register import register
from kfloop.steps.train import train_model
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from tests.fakes.datasets import binary_data, multiclass_data, noise_data, regression_data


def _defaults() -> dict:
    """The compiled pipeline's default threshold and tolerance: what `kfloop pipeline run` uses."""
    import yaml

    spec = next(yaml.safe_load_all(YAML_PATH.read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert parameter_types(YAML_PATH)["threshold"] == "NUMBER_DOUBLE"
    return {key: params[key]["defaultValue"] for key in ("threshold", "tolerance")}


def _run_steps(frame: pd.DataFrame, target: str, settings, tmp: Path, name: str, **gate) -> dict:
    """process -> train -> evaluate (-> analyze, baseline, register when the gate passes), as the pipeline."""
    tmp.mkdir(parents=True, exist_ok=True)
    frame.to_csv(tmp / "data.csv", index=False)
    paths = {k: str(tmp / f"{k}.parquet") for k in ("train", "valid", "test")}
    info = process(
        str(tmp / "data.csv"), target, settings, paths["train"], paths["valid"], paths["test"],
        str(tmp / "schema.json"), str(tmp / "quality.md"),
    )  # fmt: skip
    train_model(paths["train"], paths["valid"], str(tmp / "schema.json"), {}, str(tmp / "model"))
    gate = {**_defaults(), **gate}
    doc = evaluate_model(
        str(tmp / "model"), paths["test"], name, settings, str(tmp / "evaluation.json"),
        gate["threshold"], gate["tolerance"], train_path=paths["train"],
    )  # fmt: skip
    assert read_json(tmp / "evaluation.json")["gate"] == doc["gate"]
    if doc["gate"]["passed"]:
        analyze(str(tmp / "model"), paths["test"], "", str(tmp / "analysis.json"), str(tmp / "report.md"),
                str(tmp / "evaluation.json"))  # fmt: skip
        fit_drift_baseline(str(tmp / "model"), paths["train"], str(tmp / "drift"))
        lineage = {"data_uri": info["data_uri"], "data_sha256": info["data_sha256"]}
        doc["registered"] = register(
            name, settings, str(tmp / "model"), str(tmp / "evaluation.json"), str(tmp / "analysis.json"),
            str(tmp / "drift"), lineage,
        ).ref  # fmt: skip
    return doc


def test_the_default_threshold_is_the_automatic_one():
    assert _defaults()["threshold"] == -1.0


@pytest.mark.parametrize(
    "make, target, task, metric",
    [
        (regression_data, "target", "regression", "rmse"),
        (binary_data, "label", "binary", "auc"),
        (multiclass_data, "species", "multiclass", "accuracy"),
    ],
)
def test_every_task_registers_with_the_default_gate(make, target, task, metric, local_settings, tmp_path):
    doc = _run_steps(make(), target, local_settings, tmp_path, f"{task}-model")
    gate = doc["gate"]
    assert doc["task"] == task and gate["metric"] == metric
    assert gate["passed"], gate["reason"]
    assert gate["threshold_rule"].startswith("auto:") and "naive baseline" in gate["reason"]
    assert doc["baseline"]["metric"] == metric and gate["baseline"] == doc["baseline"]["value"]
    better = gate["candidate"] > gate["threshold"] > gate["baseline"]
    if metric == "rmse":
        better = gate["candidate"] < gate["threshold"] < gate["baseline"]
    assert better, gate
    assert doc["registered"] == f"{task}-model:1"
    assert Registry(open_store(local_settings)).get(f"{task}-model", 1).metrics["gate"]["passed"]


def test_the_regression_baseline_is_the_training_mean(local_settings, tmp_path):
    doc = _run_steps(regression_data(), "target", local_settings, tmp_path, "reg")
    train, test = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(tmp_path / "test.parquet")
    expected = np.sqrt(np.mean((test["target"] - train["target"].mean()) ** 2))
    assert doc["baseline"]["value"] == pytest.approx(expected)
    assert f"{train['target'].mean():.6g}" in doc["baseline"]["rule"]


def test_a_candidate_no_better_than_the_training_mean_is_refused_naming_it(local_settings, tmp_path):
    doc = _run_steps(noise_data(), "target", local_settings, tmp_path, "noise")
    gate = doc["gate"]
    assert gate["candidate"] >= gate["baseline"]  # the data set is one where the model learned nothing
    assert not gate["passed"]
    assert "no better than the naive baseline: candidate rmse" in gate["reason"]
    assert "(predicting the training mean 50." in gate["reason"], gate["reason"]
    assert "registered" not in doc
    assert Registry(open_store(local_settings)).list_versions() == []


def test_a_small_gain_over_the_baseline_fails_the_automatic_threshold_naming_the_baseline(local_settings, tmp_path):
    doc = _run_steps(regression_data(signal=0.0), "target", local_settings, tmp_path, "noise")  # noise around 50
    gate = doc["gate"]
    assert not gate["passed"] and "threshold failed" in gate["reason"]
    assert "10% less loss than the naive baseline (predicting the training mean" in gate["reason"], gate["reason"]


def test_a_set_threshold_keeps_its_meaning_per_task(local_settings, tmp_path):
    doc = _run_steps(regression_data(), "target", local_settings, tmp_path, "reg", threshold=0.5)
    gate = doc["gate"]
    assert not gate["passed"] and gate["threshold"] == 0.5
    assert f"candidate rmse {gate['candidate']:.6g} is not <= 0.5 (set: the maximum test RMSE)" in gate["reason"]

"""The tune, train and register steps as functions over files: the tune step's choice reaches the
model folder, the bundle and the version's lineage; with no trials it passes the parameters through."""

from __future__ import annotations

import json

import pytest

from kfloop.config import Settings
from kfloop.errors import ConfigError
from kfloop.steps.common import PARAMS_FILE, TUNING_FILE, read_json, write_json
from kfloop.steps.register import register
from kfloop.steps.train import train_with_chosen
from kfloop.steps.tune import tune_params
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from tests.fakes.datasets import noisy

OFF = {"trials": 0, "budget_seconds": 600.0, "ranges": {}, "seed": 0}


@pytest.fixture
def data(tmp_path):
    from kfloop.schema import infer_schema

    frame = noisy(900, seed=3)
    frame.iloc[:400].to_parquet(tmp_path / "train.parquet")
    frame.iloc[400:600].to_parquet(tmp_path / "valid.parquet")
    write_json(tmp_path / "schema.json", infer_schema(frame, "target", task="binary").to_dict())
    return tmp_path


def test_no_trials_passes_the_given_parameters_through_without_reading_data(tmp_path):
    doc = tune_params("no/train", "no/valid", "no/schema", {"max_depth": 3}, OFF, str(tmp_path / "chosen"))
    assert doc["tuning"] is None and doc["parameters"]["max_depth"] == 3
    assert json.loads((tmp_path / "chosen").read_text()) == doc


def test_bad_options_are_refused_before_the_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match="max_depth"):
        tune_params("no/train", "no/valid", "no/schema", {}, {**OFF, "trials": 3, "ranges": {"max_depth": [5, 1]}}, "x")
    with pytest.raises(ConfigError, match="learning_rate"):
        tune_params("no/train", "no/valid", "no/schema", {"learning_rate": 2.0}, OFF, "x")


def test_tuned_parameters_reach_the_model_folder_and_the_lineage(data, tmp_path):
    paths = [str(data / f) for f in ("train.parquet", "valid.parquet", "schema.json")]
    doc = tune_params(*paths, {"n_estimators": 50}, {**OFF, "trials": 4}, str(tmp_path / "chosen"))
    assert doc["tuning"]["trials_run"] == 4
    model = tmp_path / "model"
    train_with_chosen(*paths, str(tmp_path / "chosen"), str(model))
    assert read_json(model / PARAMS_FILE) == doc["parameters"]
    assert read_json(model / TUNING_FILE) == doc["tuning"]
    # register: the bundle keeps every trial, the lineage the parameters and the search without its trials
    evaluation, drift = tmp_path / "evaluation.json", tmp_path / "drift"
    write_json(evaluation, {"task": "binary", "metrics": {"auc": 0.7}, "gate": {"passed": True}})
    write_json(drift / "kfloop_detector.json", {})
    settings = Settings(home=tmp_path / "home")
    record = register("noisy", settings, str(model), str(evaluation), None, str(drift), {"data_uri": "x"})
    assert record.lineage["parameters"] == doc["parameters"]
    assert record.lineage["tuning"] == {k: v for k, v in doc["tuning"].items() if k != "trials"}
    assert TUNING_FILE in Registry(open_store(settings)).get("noisy", 1).files
    assert bundle.MODEL_FILE in record.files


def test_an_untuned_version_has_no_tuning_in_its_lineage(data, tmp_path):
    paths = [str(data / f) for f in ("train.parquet", "valid.parquet", "schema.json")]
    tune_params(*paths, {"n_estimators": 20}, OFF, str(tmp_path / "chosen"))
    train_with_chosen(*paths, str(tmp_path / "chosen"), str(tmp_path / "model"))
    assert not (tmp_path / "model" / TUNING_FILE).exists()
    write_json(tmp_path / "e.json", {"task": "binary", "metrics": {"auc": 0.7}, "gate": {"passed": True}})
    write_json(tmp_path / "drift" / "kfloop_detector.json", {})
    settings = Settings(home=tmp_path / "home")
    record = register(
        "noisy", settings, str(tmp_path / "model"), str(tmp_path / "e.json"), None, str(tmp_path / "drift"), {}
    )
    assert record.lineage["tuning"] is None and record.lineage["parameters"]["n_estimators"] == 20

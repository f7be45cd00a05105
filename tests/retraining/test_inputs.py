"""A retraining run's pipeline arguments from the current version: its tuned parameters reused, or
its search run again (``RetrainPolicy.tuning``), and the arguments as the local runner's flags."""

from __future__ import annotations

import pytest

from kfloop.errors import ConfigError
from kfloop.pipelines.parameters import parameter_types, parse_params
from kfloop.pipelines.training import YAML_PATH
from kfloop.retraining.inputs import pipeline_arguments
from kfloop.retraining.policy import RetrainPolicy
from kfloop.retraining.runners import run_params
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.fakes.bundles import make_bundle

TUNED = {
    "parameters": {"max_depth": 3, "learning_rate": 0.05, "subsample": 0.7, "n_estimators": 200, "seed": 0},
    "tuning": {
        "trials_requested": 30,
        "budget_seconds": 120.0,
        "space": {"max_depth": {"low": 2, "high": 6}, "learning_rate": {"low": 0.01, "high": 0.3}},
    },
}
DATA = {"source": "s3://bucket/data.parquet", "target": "churn"}


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(LocalStore(tmp_path / "home"))


def version(registry, tmp_path, lineage: dict):
    return registry.register("churn", make_bundle(tmp_path / f"b{len(registry.list_versions())}", 0.8), lineage=lineage)


def test_reuse_passes_the_tuned_values_of_the_searched_parameters_and_no_tuning(registry, tmp_path):
    record = version(registry, tmp_path, TUNED)
    arguments = pipeline_arguments(RetrainPolicy(), "churn", DATA, record)
    assert arguments == {**DATA, "model_name": "churn", "max_depth": 3, "learning_rate": 0.05, "tuning_trials": 0}


def test_retune_runs_the_same_search_again(registry, tmp_path):
    record = version(registry, tmp_path, TUNED)
    arguments = pipeline_arguments(RetrainPolicy(tuning="retune"), "churn", DATA, record)
    assert arguments["tuning_trials"] == 30 and arguments["tuning_budget_seconds"] == 120.0
    ranges = arguments["tuning_ranges"]
    assert ranges["max_depth"] == [2, 6] and ranges["learning_rate"] == [0.01, 0.3]
    assert ranges["subsample"] is None  # not searched then, not searched now
    assert "max_depth" not in arguments  # the search starts from the pipeline's parameters again


def test_the_policys_pipeline_parameters_win_and_untuned_versions_change_nothing(registry, tmp_path):
    tuned, untuned = version(registry, tmp_path, TUNED), version(registry, tmp_path, {"parameters": {"max_depth": 6}})
    policy = RetrainPolicy(pipeline_params={"tuning_trials": 5})
    assert pipeline_arguments(policy, "churn", DATA, tuned)["tuning_trials"] == 5
    assert pipeline_arguments(policy, "churn", DATA, tuned)["max_depth"] == 3
    for record in (untuned, None):
        for choice in ("reuse", "retune"):
            assert pipeline_arguments(RetrainPolicy(tuning=choice), "churn", DATA, record) == {
                **DATA,
                "model_name": "churn",
            }


def test_an_unknown_tuning_choice_is_refused():
    with pytest.raises(ConfigError, match="'again'"):
        RetrainPolicy(tuning="again")


def test_retune_arguments_survive_the_local_runners_flags(registry, tmp_path):
    record = version(registry, tmp_path, TUNED)
    arguments = pipeline_arguments(RetrainPolicy(tuning="retune"), "churn", DATA, record)
    flags = run_params(arguments)
    pairs = [flags[i + 1] for i in range(0, len(flags), 2)]
    assert parse_params(pairs, parameter_types(YAML_PATH)) == arguments  # objects go as JSON, typed back

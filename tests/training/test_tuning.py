"""The tuner (kfloop.training.tuning) run for real: Optuna's TPE over real XGBoost fits on small data."""

from __future__ import annotations

import itertools

import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.schema import infer_schema
from kfloop.training.booster import TrainParams, predict, train
from kfloop.training.evaluate import compute_metrics
from kfloop.training.tuning import DEFAULT_RANGES, TuningOptions, search_space, tune
from tests.fakes.datasets import noisy


@pytest.fixture(scope="module")
def splits():
    frame = noisy(1400)
    return infer_schema(frame, "target", task="binary"), frame.iloc[:400], frame.iloc[400:700], frame.iloc[700:]


def held_out_log_loss(schema, booster, frame) -> float:
    pred = predict(booster, schema, schema.encode_frame(frame))
    return compute_metrics(schema, schema.encode_labels(frame["target"]), pred)["log_loss"]


def test_tuning_beats_poor_defaults_on_validation_and_on_held_out_data(splits):
    schema, tr, va, te = splits
    defaults = TrainParams()
    result = tune(schema, tr, va, defaults, TuningOptions(trials=15, seed=0))
    assert result.improved and result.best_trial.value < result.baseline.value
    assert len(result.trials) == 15 and {t.state for t in result.trials} <= {"complete", "pruned"}
    assert result.best != defaults and result.best.n_estimators == defaults.n_estimators  # only searched ones move
    for name, r in DEFAULT_RANGES.items():
        assert r.low <= getattr(result.best, name) <= r.high
    # the chosen parameters also generalise: better log-loss on the test split, which tuning never saw
    tuned_loss = held_out_log_loss(schema, train(schema, tr, va, result.best), te)
    default_loss = held_out_log_loss(schema, train(schema, tr, va, defaults), te)
    assert tuned_loss < default_loss
    doc = result.to_dict()
    assert doc["trials_run"] == 15 and doc["best"]["params"] == result.best_trial.params
    assert doc["baseline"]["value"] == pytest.approx(result.baseline.value) and doc["metric"] == "logloss"


def test_the_same_seed_gives_the_same_search_and_another_seed_another(splits):
    schema, tr, va, _ = splits
    base = TrainParams(n_estimators=40)
    first, again, other = (tune(schema, tr, va, base, TuningOptions(trials=4, seed=s)) for s in (0, 0, 1))
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.value for t in first.trials] == [t.value for t in again.trials]
    assert [t.params for t in first.trials] != [t.params for t in other.trials]


def test_tuning_never_returns_parameters_worse_than_the_given_ones(splits):
    schema, tr, va, _ = splits
    given = TrainParams(max_depth=2, learning_rate=0.1, subsample=0.8, min_child_weight=5.0, n_estimators=60)
    # a search confined to stumps with a tiny learning rate cannot beat the given parameters
    ranges = {"max_depth": [1, 2], "learning_rate": [0.001, 0.002], "reg_lambda": None}
    result = tune(schema, tr, va, given, TuningOptions(trials=3, ranges=ranges))
    assert all(t.value > result.baseline.value for t in result.trials)
    assert not result.improved and result.best == given
    assert "reg_lambda" not in result.trials[0].params  # left out of the search: stays as given


def test_the_time_budget_stops_the_search(splits):
    schema, tr, va, _ = splits
    ticks = itertools.count(0, 10.0)  # every reading of the clock is 10 s later
    result = tune(
        schema,
        tr,
        va,
        TrainParams(n_estimators=20),
        TuningOptions(trials=50, budget_seconds=15),
        clock=lambda: next(ticks),
    )
    assert result.trials == [] and result.best == TrainParams(n_estimators=20)


def test_tuning_needs_validation_rows(splits):
    schema, tr, va, _ = splits
    with pytest.raises(DataError, match="validation"):
        tune(schema, tr, va.iloc[:0], TrainParams(), TuningOptions(trials=2))


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ({"max_depth": [8, 2]}, r"max_depth: \[8, 2\] is empty"),
        ({"max_depth": [2.5, 6]}, "2.5 is not a whole number"),
        ({"learning_rate": [0, 0.3]}, "learning_rate=0.0 is outside"),
        ({"subsample": [0.5, 1.5]}, "subsample=1.5 is outside"),
        ({"reg_lambda": [0, 10]}, "log scale; low must be > 0"),
        ({"learning_rate": [0.1]}, r"\[0.1\] is not \[low, high\]"),
        ({"learning_rate": ["a", 0.3]}, "'a' is not a number"),
        ({"learning_rate": [0.01, float("nan")]}, "must be a finite"),
        ({"depth": [1, 2]}, "'depth': not a tunable parameter"),
        ({name: None for name in DEFAULT_RANGES}, "no parameter to search"),
        ([["max_depth", 2, 4]], "expected an object"),
    ],
)
def test_ranges_that_make_no_sense_are_refused_naming_the_value(ranges, message):
    with pytest.raises(ConfigError, match=message):
        TuningOptions(trials=5, ranges=ranges)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trials": -1}, "tuning_trials=-1"),
        ({"trials": 2.5}, "tuning_trials=2.5"),
        ({"budget_seconds": 0}, "tuning_budget_seconds=0"),
        ({"budget_seconds": float("inf")}, "tuning_budget_seconds=inf"),
    ],
)
def test_trials_and_budget_that_make_no_sense_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        TuningOptions(**options)


def test_ranges_override_the_documented_defaults_one_by_one():
    space = search_space({"max_depth": [3, 5], "subsample": None})
    assert (space["max_depth"].low, space["max_depth"].high, space["max_depth"].kind) == (3, 5, int)
    assert "subsample" not in space and space["learning_rate"] == DEFAULT_RANGES["learning_rate"]

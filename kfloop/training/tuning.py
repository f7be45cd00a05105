"""Hyperparameter tuning: a seeded Optuna TPE search over documented ranges, scored on the validation split.

Each trial trains a booster on the training split with the given parameters and the trial's values
for the searched ones, with XGBoost's early stopping on the validation split (``n_estimators`` is
the cap, the best round is kept), and scores it by the validation loss XGBoost watches
(``EVAL_METRICS``: log-loss, multiclass log-loss or RMSE; lower is better). Trials that are clearly
worse than the median of the earlier trials at the same round are stopped early (Optuna's
``MedianPruner``, after ``PRUNE_STARTUP_TRIALS`` trials and ``PRUNE_WARMUP_ROUNDS`` rounds). The
search stops after ``trials`` trials or when ``budget_seconds`` are spent (checked between trials).

The given parameters are scored first, outside the search (the *baseline*); the result is the best
trial only when it beats the baseline's validation loss, else the given parameters: tuning never
returns parameters worse on validation than the ones it started from.

Searched ranges (``DEFAULT_RANGES``; ``ranges`` overrides them per parameter, ``null`` leaves one
out of the search)::

    max_depth          int    [2, 10]
    learning_rate      float  [0.01, 0.3]   log scale
    subsample          float  [0.5, 1.0]
    colsample_bytree   float  [0.5, 1.0]
    min_child_weight   float  [0.5, 20]     log scale
    reg_lambda         float  [0.01, 10]    log scale

A range must be ``[low, high]`` with ``low < high``, both valid values of the parameter
(``TrainParams``), whole numbers for ``max_depth`` and ``low > 0`` on a log scale; anything else
is refused with a ``ConfigError`` naming the value, before any data is read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import xgboost

from kfloop.errors import ConfigError, DataError
from kfloop.training.booster import EVAL_METRICS, TrainParams, check_param

log = logging.getLogger(__name__)

PRUNE_STARTUP_TRIALS = 5
PRUNE_WARMUP_ROUNDS = 30
MAX_TRIALS = 10_000


@dataclasses.dataclass(frozen=True)
class ParamRange:
    """One searched parameter: ``[low, high]``, on a log scale or not."""

    name: str
    kind: type
    low: float
    high: float
    log: bool = False

    def to_dict(self) -> dict:
        return {"type": self.kind.__name__, "low": self.low, "high": self.high, "log": self.log}


DEFAULT_RANGES: dict[str, ParamRange] = {
    r.name: r
    for r in (
        ParamRange("max_depth", int, 2, 10),
        ParamRange("learning_rate", float, 0.01, 0.3, log=True),
        ParamRange("subsample", float, 0.5, 1.0),
        ParamRange("colsample_bytree", float, 0.5, 1.0),
        ParamRange("min_child_weight", float, 0.5, 20.0, log=True),
        ParamRange("reg_lambda", float, 0.01, 10.0, log=True),
    )
}


def search_space(ranges: Mapping[str, Any] | None = None) -> dict[str, ParamRange]:
    """The searched ranges: ``DEFAULT_RANGES`` with ``ranges`` applied (``[low, high]``, or None to
    leave a parameter out). Raises ConfigError naming the first range that makes no sense."""
    if ranges is not None and not isinstance(ranges, Mapping):
        raise ConfigError(f"tuning ranges {ranges!r}: expected an object of parameter: [low, high]")
    space = dict(DEFAULT_RANGES)
    for name, value in (ranges or {}).items():
        if name not in DEFAULT_RANGES:
            raise ConfigError(f"tuning range for {name!r}: not a tunable parameter; tunable: {sorted(DEFAULT_RANGES)}")
        if value is None:
            del space[name]
            continue
        space[name] = _range(DEFAULT_RANGES[name], value)
    if not space:
        raise ConfigError("tuning ranges leave no parameter to search")
    return space


def _range(default: ParamRange, value: Any) -> ParamRange:
    name = default.name
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"tuning range for {name}: {value!r} is not [low, high]")
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"tuning range for {name}: {bound!r} is not a number")
        if default.kind is int and not float(bound).is_integer():
            raise ConfigError(f"tuning range for {name}: {bound!r} is not a whole number")
        try:
            check_param(name, default.kind(bound))
        except ConfigError as e:
            raise ConfigError(f"tuning range for {name}: {e}") from None
    if not low < high:
        raise ConfigError(f"tuning range for {name}: [{low}, {high}] is empty (low must be below high)")
    if default.log and low <= 0:
        raise ConfigError(f"tuning range for {name}: [{low}, {high}] is on a log scale; low must be > 0")
    return dataclasses.replace(default, low=default.kind(low), high=default.kind(high))


@dataclasses.dataclass(frozen=True)
class TuningOptions:
    """How much to search: ``trials`` (0: no tuning), a time budget, the ranges and the sampler's seed."""

    trials: int = 0
    budget_seconds: float = 600.0
    ranges: dict = dataclasses.field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 0 <= self.trials <= MAX_TRIALS:
            raise ConfigError(f"tuning_trials={self.trials!r}: expected a whole number from 0 to {MAX_TRIALS}")
        budget = self.budget_seconds
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (0 < budget < math.inf):
            raise ConfigError(f"tuning_budget_seconds={budget!r}: expected a number of seconds > 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"tuning seed {self.seed!r}: expected a whole number >= 0")
        search_space(self.ranges)  # refused here, before any data is read

    @property
    def space(self) -> dict[str, ParamRange]:
        return search_space(self.ranges)


@dataclasses.dataclass(frozen=True)
class Trial:
    """One scored set of parameters: its searched values, validation loss, state and boosted rounds."""

    number: int | None  # None for the baseline
    params: dict
    value: float
    state: str  # "baseline", "complete" or "pruned"
    rounds: int
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TuningResult:
    metric: str
    baseline: Trial
    trials: list[Trial]
    best: TrainParams
    best_trial: Trial
    options: TuningOptions
    seconds: float

    @property
    def improved(self) -> bool:
        return self.best_trial is not self.baseline

    def to_dict(self) -> dict:
        """The tuning record stored with the model and in the version's lineage."""
        return {
            "metric": self.metric,
            "direction": "minimize",
            "sampler": "optuna.TPESampler",
            "seed": self.options.seed,
            "trials_requested": self.options.trials,
            "trials_run": len(self.trials),
            "trials_pruned": sum(t.state == "pruned" for t in self.trials),
            "budget_seconds": self.options.budget_seconds,
            "seconds": round(self.seconds, 3),
            "space": {name: r.to_dict() for name, r in self.options.space.items()},
            "baseline": self.baseline.to_dict(),
            "best": self.best_trial.to_dict(),
            "improved": self.improved,
            "trials": [t.to_dict() for t in self.trials],
        }


def tune(
    schema,
    train_df,
    valid_df,
    base: TrainParams,
    options: TuningOptions,
    clock: Callable[[], float] = time.monotonic,
) -> TuningResult:
    """Search ``options.space`` around ``base`` (its other parameters stay); see the module docstring."""
    import optuna

    from kfloop.training.booster import fit, matrices

    if options.trials < 1:
        raise ConfigError("tune needs tuning_trials >= 1")
    if valid_df is None or not len(valid_df):
        raise DataError("tuning needs validation rows to score the trials on; the validation split is empty")
    started = clock()
    space = options.space
    dtrain, dvalid = matrices(schema, train_df, valid_df)
    metric = EVAL_METRICS[schema.task]

    def run(params: TrainParams, trial=None) -> tuple[float, int, bool]:
        watch = _Watch(metric, trial)
        booster = fit(schema, dtrain, dvalid, params, callbacks=[watch])
        return watch.score(params.early_stopping_rounds > 0), booster.num_boosted_rounds(), watch.pruned

    t0 = clock()
    value, rounds, _ = run(base)
    baseline = Trial(None, {n: getattr(base, n) for n in space}, value, "baseline", rounds, clock() - t0)

    def objective(trial: optuna.Trial) -> float:
        t0 = clock()
        values = {name: _suggest(trial, r) for name, r in space.items()}
        value, rounds, pruned = run(dataclasses.replace(base, **values), trial)
        trial.set_user_attr("rounds", rounds)
        trial.set_user_attr("seconds", clock() - t0)
        trial.set_user_attr("value", value)
        if pruned:
            raise optuna.TrialPruned()
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=options.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_ROUNDS),
    )
    remaining = options.budget_seconds - (clock() - started)
    if remaining > 0:
        study.optimize(objective, n_trials=options.trials, timeout=remaining, catch=())
    trials = [
        Trial(
            t.number,
            dict(t.params),
            float(t.user_attrs["value"]),
            "pruned" if t.state == optuna.trial.TrialState.PRUNED else "complete",
            int(t.user_attrs["rounds"]),
            round(float(t.user_attrs["seconds"]), 3),
        )
        for t in study.trials
        if "value" in t.user_attrs
    ]
    complete = [t for t in trials if t.state == "complete"]
    best_trial = min(complete, key=lambda t: t.value, default=baseline)
    if not best_trial.value < baseline.value:
        best_trial = baseline
    best = dataclasses.replace(base, **best_trial.params) if best_trial is not baseline else base
    seconds = clock() - started
    log.info(
        "tuned in %.1fs: %d trials (%d pruned), valid %s %.6g (given parameters %.6g)",
        seconds,
        len(trials),
        len(trials) - len(complete),
        metric,
        best_trial.value,
        baseline.value,
    )
    return TuningResult(metric, baseline, trials, best, best_trial, options, seconds)


def _suggest(trial, r: ParamRange):
    if r.kind is int:
        return trial.suggest_int(r.name, int(r.low), int(r.high), log=r.log)
    return trial.suggest_float(r.name, r.low, r.high, log=r.log)


class _Watch(xgboost.callback.TrainingCallback):
    """Records the validation loss per round; reports it to the Optuna trial and stops a pruned one."""

    def __init__(self, metric: str, trial=None):
        super().__init__()
        self.metric, self.trial, self.history, self.pruned = metric, trial, [], False

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        value = float(evals_log["valid"][self.metric][-1])
        self.history.append(value)
        if self.trial is not None:
            self.trial.report(value, epoch)
            if self.trial.should_prune():
                self.pruned = True
                return True  # stop this trial's boosting
        return False

    def score(self, early_stopping: bool) -> float:
        """The kept model's validation loss: the best round's with early stopping, else the last."""
        if not self.history:
            raise DataError("no validation loss was recorded")
        return min(self.history) if early_stopping and not self.pruned else self.history[-1]

"""tune: search the training parameters on the validation split (Optuna TPE), or pass them through."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output


def tune(
    train: Input[Dataset],
    valid: Input[Dataset],
    schema: Input[Artifact],
    n_estimators: int,
    max_depth: int,
    learning_rate: float,
    subsample: float,
    colsample_bytree: float,
    min_child_weight: float,
    reg_lambda: float,
    early_stopping_rounds: int,
    seed: int,
    tuning_trials: int,
    tuning_budget_seconds: float,
    tuning_ranges: dict,
    params: Output[Artifact],
    metrics: Output[Metrics],
):
    from kfloop.components.kfp_metrics import log_tuning
    from kfloop.steps.tune import tune_params

    given = dict(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        subsample=subsample,
        colsample_bytree=colsample_bytree,
        min_child_weight=min_child_weight,
        reg_lambda=reg_lambda,
        early_stopping_rounds=early_stopping_rounds,
        seed=seed,
    )
    options = dict(trials=tuning_trials, budget_seconds=tuning_budget_seconds, ranges=tuning_ranges, seed=seed)
    log_tuning(tune_params(train.path, valid.path, schema.path, given, options, params.path), metrics)

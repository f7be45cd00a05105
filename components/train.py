"""train: fit an XGBoost model with early stopping on the validation split."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def train(
    train: Input[Dataset],
    valid: Input[Dataset],
    schema: Input[Artifact],
    n_estimators: int,
    max_depth: int,
    learning_rate: float,
    subsample: float,
    colsample_bytree: float,
    min_child_weight: float,
    early_stopping_rounds: int,
    seed: int,
    model: Output[Model],
) -> int:
    from kfloop.steps.train import train_model

    params = dict(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        subsample=subsample,
        colsample_bytree=colsample_bytree,
        min_child_weight=min_child_weight,
        early_stopping_rounds=early_stopping_rounds,
        seed=seed,
    )
    model.metadata["framework"] = "xgboost"
    return train_model(train.path, valid.path, schema.path, params, model.path)["rounds"]

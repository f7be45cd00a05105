"""train: fit an XGBoost model with early stopping on the validation split, with the tune step's parameters."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def train(
    train: Input[Dataset],
    valid: Input[Dataset],
    schema: Input[Artifact],
    params: Input[Artifact],
    model: Output[Model],
) -> int:
    from kfloop.steps.train import train_with_chosen

    model.metadata["framework"] = "xgboost"
    return train_with_chosen(train.path, valid.path, schema.path, params.path, model.path)["rounds"]

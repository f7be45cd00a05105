"""train: fit the XGBoost model and write the model folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kfloop.steps.common import PARAMS_FILE, TUNING_FILE, read_json, read_schema, write_json
from kfloop.store import bundle
from kfloop.training import booster as train


def train_model(
    train_path: str, valid_path: str, schema_path: str, params: dict, model_dir: str, tuning: dict | None = None
) -> dict:
    """Train an XGBoost model and write the model folder (UBJSON model, schema, parameters, and
    the tuning record when the parameters were tuned)."""
    schema, chosen = read_schema(schema_path), train.TrainParams.from_mapping(params)
    booster = train.train(schema, pd.read_parquet(train_path), pd.read_parquet(valid_path), chosen)
    out = Path(model_dir)
    train.save_model(booster, out / bundle.MODEL_FILE)
    write_json(out / bundle.SCHEMA_FILE, schema.to_dict())
    write_json(out / PARAMS_FILE, chosen.to_dict())
    if tuning:
        write_json(out / TUNING_FILE, tuning)
    return {"rounds": booster.num_boosted_rounds()}


def train_with_chosen(train_path: str, valid_path: str, schema_path: str, chosen_path: str, model_dir: str) -> dict:
    """``train_model`` with the parameters the ``tune`` step chose (``kfloop.steps.tune``)."""
    chosen = read_json(chosen_path)
    return train_model(train_path, valid_path, schema_path, chosen["parameters"], model_dir, chosen.get("tuning"))

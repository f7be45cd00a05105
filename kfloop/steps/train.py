"""train: fit the XGBoost model and write the model folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kfloop.steps.common import PARAMS_FILE, read_schema, write_json
from kfloop.store import bundle
from kfloop.training import booster as train


def train_model(train_path: str, valid_path: str, schema_path: str, params: dict, model_dir: str) -> dict:
    """Train an XGBoost model and write the model folder (UBJSON model, schema, parameters)."""
    schema, chosen = read_schema(schema_path), train.TrainParams.from_mapping(params)
    booster = train.train(schema, pd.read_parquet(train_path), pd.read_parquet(valid_path), chosen)
    out = Path(model_dir)
    train.save_model(booster, out / bundle.MODEL_FILE)
    write_json(out / bundle.SCHEMA_FILE, schema.to_dict())
    write_json(out / PARAMS_FILE, chosen.to_dict())
    return {"rounds": booster.num_boosted_rounds()}

"""A real churn model and its baseline constraints, and served windows of ``sample:churn`` traffic
(decoded as the transformer decodes requests, predicted by the model) for the quality-check tests."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import xgboost

from kfloop.inference.requests import Decoded, RequestDecoder
from kfloop.monitoring import constraints
from kfloop.schema import FeatureSchema, infer_schema
from kfloop.training.booster import TrainParams, predict, train
from kfloop.training.samples import churn

TRAIN_ROWS = 4000


@dataclasses.dataclass(frozen=True)
class ChurnModel:
    schema: FeatureSchema
    booster: xgboost.Booster
    baseline: constraints.Baseline
    decoder: RequestDecoder

    def window(self, rows: int, seed: int, **knobs) -> tuple[Decoded, np.ndarray]:
        """``rows`` customers of ``sample:churn`` with ``knobs``, as one decoded request and the
        model's answers (class probabilities per row)."""
        return self.request(churn(rows, seed=seed, **knobs).drop(columns="churn"))

    def request(self, frame) -> tuple[Decoded, np.ndarray]:
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        decoded = self.decoder.decode_v1({"instances": records})
        return decoded, predict(self.booster, self.schema, decoded.X)


def training_frame():
    """The rows ``churn_model`` is trained on (the first 4000 of 5000 customers of seed 0)."""
    return churn(TRAIN_ROWS + 1000, seed=0).iloc[:TRAIN_ROWS]


@functools.lru_cache(maxsize=1)
def churn_model() -> ChurnModel:
    """Trained on 4000 rows of ``sample:churn`` (seed 0) with early stopping on 1000 more, as the
    pipeline trains; the baseline is the baseline step's (training rows, predictions on the validation rows)."""
    data = churn(TRAIN_ROWS + 1000, seed=0)
    train_df, valid_df = data.iloc[:TRAIN_ROWS], data.iloc[TRAIN_ROWS:]
    schema = infer_schema(data, "churn")
    booster = train(schema, train_df, valid_df, TrainParams(nthread=1))
    X = schema.encode_frame(train_df)
    held_out = predict(booster, schema, schema.encode_frame(valid_df))
    baseline = constraints.compute(schema, X, held_out, prediction_rows="validation")
    return ChurnModel(schema, booster, baseline, RequestDecoder(schema))

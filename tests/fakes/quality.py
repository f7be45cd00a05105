"""The churn model of ``tests.fakes.churn_model`` with its baseline constraints, and served windows of
``sample:churn`` traffic (decoded as the transformer decodes requests, predicted by the model) for the
quality-check tests."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import xgboost

from kfloop.inference.requests import Decoded, RequestDecoder
from kfloop.monitoring import constraints
from kfloop.schema import FeatureSchema
from kfloop.training.booster import predict
from kfloop.training.samples import churn
from tests.fakes.churn_model import churn_model as trained


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
    """The rows ``churn_model`` is trained on (``tests.fakes.churn_model``'s training split)."""
    return trained().train


@functools.lru_cache(maxsize=1)
def churn_model() -> ChurnModel:
    """``tests.fakes.churn_model``'s booster (trained as the pipeline trains, early stopping on the
    validation split) with the baseline step's baseline: training rows, predictions on the validation rows."""
    model = trained()
    X = model.schema.encode_frame(model.train)
    held_out = predict(model.booster, model.schema, model.schema.encode_frame(model.valid))
    baseline = constraints.compute(model.schema, X, held_out, prediction_rows="validation")
    return ChurnModel(model.schema, model.booster, baseline, RequestDecoder(model.schema))

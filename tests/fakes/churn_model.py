"""A real booster trained on sample:churn (train/valid/test = 3500/750/750 rows, seed 0), for the
monitoring signal tests: ``churn_model()`` trains it once per process."""

from __future__ import annotations

import functools
import types

from kfloop.schema import infer_schema
from kfloop.training import booster
from kfloop.training.samples import churn


@functools.lru_cache(maxsize=1)
def churn_model() -> types.SimpleNamespace:
    frame = churn(5000, seed=0)
    schema = infer_schema(frame, "churn")
    train, valid, test = frame.iloc[:3500], frame.iloc[3500:4250], frame.iloc[4250:]
    model = booster.train(schema, train, valid, booster.TrainParams(nthread=1))
    return types.SimpleNamespace(schema=schema, booster=model, train=train, valid=valid, test=test)

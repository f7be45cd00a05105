"""A real booster trained on sample:churn (train/valid/test = 3500/750/750 rows, seed 0), for the
monitoring tests: ``churn_model()`` trains it once per process (``tests.fakes.quality`` adds its
baseline constraints)."""

from __future__ import annotations

import functools
import types

from kfloop.schema import infer_schema
from kfloop.training import booster
from kfloop.training.samples import churn

TRAIN_ROWS, VALID_ROWS, TEST_ROWS = 3500, 750, 750


def churn_frame():
    """The 5000 customers of ``sample:churn`` (seed 0) the splits are cut from."""
    return churn(TRAIN_ROWS + VALID_ROWS + TEST_ROWS, seed=0)


@functools.lru_cache(maxsize=1)
def churn_model() -> types.SimpleNamespace:
    frame = churn_frame()
    schema = infer_schema(frame, "churn")
    train = frame.iloc[:TRAIN_ROWS]
    valid, test = frame.iloc[TRAIN_ROWS : TRAIN_ROWS + VALID_ROWS], frame.iloc[TRAIN_ROWS + VALID_ROWS :]
    model = booster.train(schema, train, valid, booster.TrainParams(nthread=1))
    return types.SimpleNamespace(schema=schema, booster=model, train=train, valid=valid, test=test)

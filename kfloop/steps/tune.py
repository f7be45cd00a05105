"""tune: choose the training parameters, searched on the validation split or as given (no tuning)."""

from __future__ import annotations

from kfloop.steps.common import read_schema, write_json
from kfloop.training.booster import TrainParams
from kfloop.training.tuning import TuningOptions


def tune_params(train_path: str, valid_path: str, schema_path: str, params: dict, options: dict, out_path: str) -> dict:
    """Write ``{"parameters": ..., "tuning": ...}`` to ``out_path`` (the ``train`` step's input).

    With ``options["trials"]`` 0 the given parameters pass through unchanged and ``tuning`` is None,
    without reading the data; else ``tuning`` is the search's record (``TuningResult.to_dict``).
    Parameters and options are checked before any data is read."""
    base, chosen = TrainParams.from_mapping(params), TuningOptions(**options)
    doc: dict = {"parameters": base.to_dict(), "tuning": None}
    if chosen.trials:
        import pandas as pd

        from kfloop.training.tuning import tune

        result = tune(read_schema(schema_path), pd.read_parquet(train_path), pd.read_parquet(valid_path), base, chosen)
        doc = {"parameters": result.best.to_dict(), "tuning": result.to_dict()}
    write_json(out_path, doc)
    return doc

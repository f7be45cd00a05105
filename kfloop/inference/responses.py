"""Inference answers on KServe's V1 and V2 JSON protocols: encoded from the model's predictions, read
back as per-row predictions, and converted to the other protocol.

The predictor encodes its predictions (``encode_predictions`` for V1, ``encode_v2_output`` for V2)
into answers written as KServe writes them (``v1_answer``, ``v2_answer``: every field, ``parameters``
null). The drift transformer reads a predictor's answer as per-row predictions (``answer_predictions``)
to capture them, and converts it to the client's protocol when the predictor speaks the other one
(``answer_in``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kfloop.inference.tensors import OUTPUT_NAME, Tensor, plain_values
from kfloop.schema import FeatureSchema

# -- encoding the model's predictions -------------------------------------------------------------


def encode_predictions(schema: FeatureSchema, pred: np.ndarray) -> list:
    """V1 ``predictions``: per-row class probabilities (in ``schema.classes`` order) or values."""
    return _checked(schema, np.asarray(pred)).tolist()


def encode_v2_output(schema: FeatureSchema, pred: np.ndarray) -> Tensor:
    """The V2 ``predictions`` output: FP32 ``[n, n_classes]`` or ``[n]``."""
    pred = _checked(schema, np.ascontiguousarray(pred, dtype=np.float32))
    return Tensor(OUTPUT_NAME, list(pred.shape), "FP32", pred)


def _checked(schema: FeatureSchema, pred: np.ndarray) -> np.ndarray:
    expected_ndim = 1 if schema.task == "regression" else 2
    if pred.ndim != expected_ndim:
        raise ValueError(f"{schema.task} predictions must be {expected_ndim}-D; got shape {pred.shape}")
    return pred


# -- answers ----------------------------------------------------------------------------------------


def v1_answer(predictions: list) -> dict:
    """A V1 answer: ``{"predictions": [...]}``, one per row."""
    return {"predictions": predictions}


def v2_answer(model_name: str, version: str | None, request_id: str, output: Tensor) -> dict:
    """A V2 answer with one output (its data an ndarray), written as KServe writes V2 answers."""
    return {
        "model_name": model_name,
        "model_version": version,
        "id": request_id,
        "parameters": None,
        "outputs": [
            {
                "name": output.name,
                "shape": output.shape,
                "datatype": output.datatype,
                "parameters": None,
                "data": output.data.ravel().tolist(),
            }
        ],
    }


def predictions_output(predictions: Sequence) -> Tensor:
    """The V2 ``predictions`` output (FP32, the shape of ``predictions``) of a V1 answer's predictions."""
    values = np.asarray(predictions, dtype=np.float32)
    return Tensor(OUTPUT_NAME, list(values.shape), "FP32", values)


# -- reading and converting a predictor's answer ------------------------------------------------------


def answer_predictions(answer: dict) -> list:
    """Per-row predictions of a V1 answer (``predictions``) or a V2 answer (``outputs``)."""
    return answer["predictions"] if "predictions" in answer else output_predictions(answer["outputs"])


def output_predictions(outputs: Sequence[dict]) -> list:
    """Per-row predictions from a V2 answer's ``outputs`` (the ``predictions`` output, else the first)."""
    output = next((o for o in outputs if o.get("name") == OUTPUT_NAME), outputs[0])
    data, shape = plain_values(output["data"]), list(output["shape"])
    if len(shape) < 2:
        return list(data)
    width = int(np.prod(shape[1:]))
    return [data[i : i + width] for i in range(0, len(data), width)]


def answer_in(protocol: str, answer: dict, model_name: str, version: str | None, request_id: str) -> dict:
    """A predictor's answer on the other protocol, converted to ``protocol`` ("v1" or "v2"); the V2
    answer names ``model_name``, ``version`` and ``request_id``."""
    if protocol == "v1":
        return v1_answer(output_predictions(answer["outputs"]))
    return v2_answer(model_name, version, request_id, predictions_output(answer["predictions"]))

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
from typing import Any

import numpy as np
import orjson

from kfloop.errors import InvalidRequest
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
    """A V2 answer with one output (its data an ndarray), as the Open Inference Protocol's response
    schema has it: fields typed as objects are left out rather than ``null``, and ``model_version``
    only when there is one."""
    answer = {"model_name": model_name, "id": request_id}
    if version is not None:
        answer["model_version"] = str(version)
    answer["outputs"] = [
        {"name": output.name, "shape": output.shape, "datatype": output.datatype, "data": output.data.ravel().tolist()}
    ]
    return answer


# -- requested outputs and binary answers -----------------------------------------------------------

BINARY_CONTENT_TYPE = "application/octet-stream"


def requested_binary(body: Any, output_names: Sequence[str] = (OUTPUT_NAME,)) -> bool:
    """Whether a V2 JSON request asks for its outputs as binary data (the binary tensor extension:
    ``parameters.binary_data_output``, or ``binary_data`` on a requested output), after checking the
    outputs it names: an output the model does not have, or a flag that is not a boolean, raises
    ``InvalidRequest`` naming it."""
    if not isinstance(body, dict):
        return False
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest(f'"parameters" must be an object; got {type(parameters).__name__}')
    binary = _flag((parameters or {}).get("binary_data_output", False), "parameters.binary_data_output")
    outputs = body.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list):
        raise InvalidRequest(f'"outputs" must be a list of requested outputs; got {type(outputs).__name__}')
    flags = []
    for i, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest(f"outputs[{i}] must be an object with a string name; got {output!r}")
        if name not in output_names:
            raise InvalidRequest(f"outputs[{i}]: unknown output {name!r}; the model's outputs are {list(output_names)}")
        params = output.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest(f"outputs[{i}].parameters must be an object; got {type(params).__name__}")
        flags.append(_flag((params or {}).get("binary_data", binary), f"outputs[{i}].parameters.binary_data"))
    return any(flags) if flags else binary


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{what} must be true or false; got {value!r}")
    return value


def binary_answer(answer: dict) -> tuple[bytes, int]:
    """A V2 JSON answer in the binary tensor extension: the JSON header (each output's ``data``
    replaced by ``parameters.binary_data_size``) followed by the outputs' little-endian bytes; and
    the header's length, for the ``inference-header-content-length`` header."""
    header, blobs = {k: v for k, v in answer.items() if k != "outputs" and v is not None}, []
    header["outputs"] = []
    for output in answer["outputs"]:
        dtype = _BINARY_DTYPES.get(output["datatype"])
        if dtype is None:
            raise ValueError(f"output {output['name']!r}: no binary encoding for datatype {output['datatype']}")
        blob = np.asarray(plain_values(output["data"]), dtype=dtype).tobytes()
        params = {**(output.get("parameters") or {}), "binary_data_size": len(blob)}
        fields = {k: v for k, v in output.items() if k != "data" and v is not None}
        header["outputs"].append({**fields, "parameters": params})
        blobs.append(blob)
    head = orjson.dumps(header)
    return head + b"".join(blobs), len(head)


_BINARY_DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}


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

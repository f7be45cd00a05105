"""V2 (Open Inference Protocol) tensors: the ``Tensor`` that a V2 request's inputs and an answer's
outputs are made of, the datatypes kfloop accepts, a tensor's values as plain JSON values, and the
model's V2 metadata (the tensors it takes and the one it answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from kfloop.schema import FeatureSchema

NUMERIC_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
OUTPUT_NAME = "predictions"


class Tensor(NamedTuple):
    """A V2 tensor: data is a flat or nested list, or an ndarray, of ``shape``."""

    name: str
    shape: Sequence[int]
    datatype: str
    data: Any


def plain_values(data: Any) -> list:
    """A tensor's values as one flat list of JSON values (numpy arrays and nested lists flattened,
    bytes decoded as UTF-8)."""
    if isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    elif data and isinstance(data[0], list):
        data = [v for row in data for v in row]
    if any(isinstance(v, bytes) for v in data):
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
    return data


def v2_input_metadata(schema: FeatureSchema) -> list[dict]:
    """V2 model metadata inputs: one per feature, BYTES for categorical, FP32 for numeric."""
    return [
        {"name": f.name, "datatype": "BYTES" if f.kind == "categorical" else "FP32", "shape": [-1]}
        for f in schema.features
    ]


def v2_output_metadata(schema: FeatureSchema) -> list[dict]:
    """V2 model metadata outputs: ``predictions``, FP32 ``[-1, n_classes]`` or ``[-1]``."""
    shape = [-1] if schema.task == "regression" else [-1, len(schema.classes)]
    return [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": shape}]

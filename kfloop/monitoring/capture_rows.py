"""The rows of one served request as capture records (``kfloop.monitoring.capture.capture_record``).

A request is captured after the predictor answered it: one record per row, with the row's
feature values as received (by feature name), the categorical values the schema does not know,
and the prediction for the row. ``v1_rows`` and ``v2_rows`` take bodies that
``kfloop.inference.codec.RequestDecoder`` has already accepted, so their shapes are known to be valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kfloop.inference.codec import Decoded, Tensor
from kfloop.monitoring.capture import capture_record


def v1_rows(body: dict, names: Sequence[str]) -> list[dict]:
    """Feature values by name, per instance of a V1 body (lists in schema order, or objects)."""
    instances = body["instances"]
    if isinstance(instances[0], dict):
        return instances
    return [dict(zip(names, row)) for row in instances]


def v2_rows(tensors: Sequence[Tensor], names: Sequence[str]) -> list[dict]:
    """Feature values by name, per row of V2 inputs: one input per feature, or one [n, k] tensor."""
    if len(tensors) == 1 and tensors[0].name not in names:
        values = _flat(tensors[0].data)
        width = len(names)
        return [dict(zip(names, values[i : i + width])) for i in range(0, len(values), width)]
    columns = {t.name: _flat(t.data) for t in tensors}
    return [dict(zip(names, row)) for row in zip(*(columns[name] for name in names))]


def unseen_by_row(rows: list[dict], decoded: Decoded, names: Sequence[str]) -> list[dict]:
    """Per row, the categorical values the schema does not know, ``{feature: value}`` ({} if none)."""
    out: list[dict] = [{} for _ in rows]
    for name in decoded.unseen:
        missing = np.flatnonzero(np.isnan(decoded.X[:, names.index(name)]))
        for i in missing:
            value = rows[i][name]
            if value is not None:
                out[i][name] = value
    return out


def v2_predictions(outputs: Sequence[dict]) -> list:
    """Per-row predictions from a V2 response's ``outputs`` (the ``predictions`` output, else the first)."""
    output = next((o for o in outputs if o.get("name") == "predictions"), outputs[0])
    data, shape = _flat(output["data"]), list(output["shape"])
    if len(shape) < 2:
        return list(data)
    width = int(np.prod(shape[1:]))
    return [data[i : i + width] for i in range(0, len(data), width)]


def request_records(
    model: str,
    version: str,
    revision: str,
    request_id: str,
    time: str,
    rows: list[dict],
    unseen: list[dict],
    predictions: Sequence,
) -> list[dict]:
    """One capture record per row; the row ``i`` of the request is ``<request_id>:<i>``."""
    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows of request {request_id}")
    return [
        capture_record(
            model,
            version,
            row,
            prediction,
            revision=revision,
            unseen=row_unseen,
            request_id=f"{request_id}:{i}",
            time=time,
        )
        for i, (row, row_unseen, prediction) in enumerate(zip(rows, unseen, predictions))
    ]


def _flat(data) -> list:
    """A tensor's values as one flat list (numpy arrays and nested lists flattened, bytes decoded)."""
    if isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    elif data and isinstance(data[0], list):
        data = [v for row in data for v in row]
    if any(isinstance(v, bytes) for v in data):
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
    return data

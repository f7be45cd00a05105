"""The rows of one served request as capture records (``kfloop.monitoring.capture.capture_record``).

A request is captured after the predictor answered it: one record per row, with the row's
feature values as received (by feature name), the categorical values the schema does not know,
and the prediction for the row. The serving path uses ``request_capture``: the whole request as one
``CaptureBatch`` (its columns as received, nothing done per row; the writer thread does the rest).
``request_records`` builds the same records one dict per row, from rows and predictions read out of
the request and the answer by ``kfloop.inference`` (``requests.v1_rows``/``v2_rows``,
``responses.answer_predictions``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

import numpy as np

from kfloop.inference.requests import Decoded
from kfloop.inference.tensors import OUTPUT_NAME, Tensor
from kfloop.monitoring.capture import capture_record
from kfloop.monitoring.capture_batch import CaptureBatch


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
    """One capture record per row; the row ``i`` of the request is ``<request_id>:<i>``, and its
    ``capture_id`` ``<uuid>:<i>``, with a new uuid per request: unique even when a client sends the same
    ``x-request-id`` again (a label naming such an id labels its latest capture)."""
    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows of request {request_id}")
    capture = uuid.uuid4().hex
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
            capture_id=f"{capture}:{i}",
        )
        for i, (row, row_unseen, prediction) in enumerate(zip(rows, unseen, predictions))
    ]


def request_capture(
    model: str,
    version: str,
    revision: str,
    request_id: str,
    time: str | float,
    names: Sequence[str],
    decoded: Decoded,
    answer: dict,
    *,
    body: dict | None = None,
    tensors: Sequence[Tensor] | None = None,
) -> CaptureBatch:
    """A request's capture records as one ``CaptureBatch``, from a V1 ``body`` or V2 ``tensors`` the decoder
    accepted and the predictor's ``answer``, without a step per row: what the writer needs is referenced,
    not copied (the request's values are not changed afterwards). Row ``i`` and its capture id are named as
    ``request_records`` names them (the capture id: 128 random bits in hex, as a uuid4's ``hex``, at a
    quarter of its cost); ``time`` may be epoch seconds (formatted on the writer's thread). ValueError
    when the answer does not hold one prediction per row."""
    n = decoded.n_rows
    if tensors is not None:
        if len(tensors) == 1 and tensors[0].name not in names:
            layout, features = "matrix", tensors[0].data
        else:
            layout, features = "columns", {t.name: t.data for t in tensors}
    else:
        instances = body["instances"]
        layout, features = ("objects" if isinstance(instances[0], dict) else "rows"), instances
    predictions = answer["predictions"] if "predictions" in answer else answer_output(answer["outputs"])
    count = len(predictions) if isinstance(predictions, list) else int((predictions.get("shape") or [-1])[0])
    if count != n:
        raise ValueError(f"{count} predictions for {n} rows of request {request_id}")
    unseen = {}
    if decoded.unseen:
        unseen = {name: np.flatnonzero(np.isnan(decoded.X[:, names.index(name)])).tolist() for name in decoded.unseen}
    return CaptureBatch(
        model,
        str(version),
        revision,
        time,
        request_id,
        os.urandom(16).hex(),
        tuple(names),
        layout,
        features,
        predictions,
        0,
        n,
        unseen,
        decoded.exact if layout == "rows" else None,
    )


def answer_output(outputs: Sequence[dict]) -> dict:
    """The output of a V2 answer that holds the predictions (named ``predictions``, else the first)."""
    return next((o for o in outputs if o.get("name") == OUTPUT_NAME), outputs[0])

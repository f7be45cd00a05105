"""The rows of one served request as capture records (``kfloop.monitoring.capture.capture_record``).

A request is captured after the predictor answered it: one record per row, with the row's
feature values as received (by feature name), the categorical values the schema does not know,
and the prediction for the row. The rows and the predictions are read out of the request and the
answer by ``kfloop.inference`` (``requests.v1_rows``/``v2_rows``, ``responses.answer_predictions``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np

from kfloop.inference.requests import Decoded
from kfloop.monitoring.capture import capture_record


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

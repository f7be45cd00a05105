"""Benchmark: what capturing a served request costs, on the request path and on the writer's thread,
per-row records (the path before columnar capture) against one columnar batch per request (today's).

    python benchmarks/capture.py              # ~1 minute
    python benchmarks/capture.py --quick      # fewer repeats

Per request shape (churn: 8 features, 3 categorical, with a missing and an unseen value; an all-numeric
30-feature model; 1 and 100 rows; V1 lists, V1 objects and V2 one input per feature), in one process:

- request path: what the transformer's ``_observe`` does for capture, per request: ``records``: read
  the rows out of the body (``v1_rows``/``v2_rows``), the unseen values per row, the predictions, one
  record dict per row (``request_records``), ``CaptureWriter.add``; ``batch``: ``request_capture``
  and ``CaptureWriter.add`` (the transformer's path). Without and with the crash journal (one line per
  record, or per request, written before ``add`` returns);
- writer thread: encoding a stored object's worth of requests (the transformer's ``--capture_batch_size``,
  5,000 records) into one stored object (``encode`` of the records, ``encode_batches`` of the batches), in
  JSON Lines and Parquet, per request.

Costs are this thread's CPU time (``time.thread_time``: system calls included, other processes not),
the least of several repeats, for each alike; ratios are measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from kfloop.inference.requests import RequestDecoder, v1_rows, v2_rows, v2_tensors
from kfloop.inference.responses import answer_predictions
from kfloop.monitoring.capture import CaptureWriter
from kfloop.monitoring.capture_format import encode, encode_batches
from kfloop.monitoring.capture_rows import request_capture, request_records, unseen_by_row
from kfloop.schema import infer_schema
from kfloop.serving.model_servers.transformer import TransformerOptions
from kfloop.store.objects import LocalStore
from kfloop.timestamps import rfc3339
from kfloop.training.samples import churn

OBJECT_RECORDS = TransformerOptions().capture_batch_size  # records per stored object, as the transformer writes


class Case:
    """One request shape: its schema, body or tensors, decoded rows and the predictor's answer."""

    def __init__(self, label, schema, body=None, tensors=None):
        self.label, self.schema, self.names = label, schema, schema.names
        self.body, self.tensors = body, tensors
        decoder = RequestDecoder(schema)
        self.decoded = decoder.decode_v2_inputs(tensors) if tensors is not None else decoder.decode_v1(body)
        n = self.decoded.n_rows
        self.answer = {"predictions": np.round(np.random.default_rng(n).random((n, 2)), 6).tolist()}
        self.n_rows = n

    def records(self, writer: CaptureWriter | None) -> list[dict]:
        names = self.names
        rows = v2_rows(self.tensors, names) if self.tensors is not None else v1_rows(self.body, names)
        records = request_records(
            "churn", "1", "stable", "req", rfc3339(), rows, unseen_by_row(rows, self.decoded, names),
            answer_predictions(self.answer),
        )  # fmt: skip
        if writer is not None:
            writer.add(records)
        return records

    def batch(self, writer: CaptureWriter | None):
        batch = request_capture(
            "churn", "1", "stable", "req", time.time(), self.names, self.decoded, self.answer,
            body=self.body, tensors=self.tensors,
        )  # fmt: skip
        if writer is not None:
            writer.add(batch)
        return batch


def cases() -> list[Case]:
    frame = churn(200, seed=3)
    schema = infer_schema(frame, "churn")
    rows = json.loads(frame.drop(columns=["churn"]).to_json(orient="records"))
    rows[1]["monthly_charges"], rows[2]["contract"], rows[3]["payment_method"] = None, None, "cheque"
    names = schema.names
    rng = np.random.default_rng(0)
    wide = {f"x{i}": rng.normal(size=200).round(4) for i in range(30)}
    wide_schema = infer_schema(_frame({**wide, "y": rng.integers(0, 2, 200)}), "y")
    wide_rows = np.column_stack(list(wide.values())).tolist()
    out = []
    for n in (1, 100):
        part = rows[1 : 1 + n] if n == 1 else rows[:n]
        inputs = [
            {"name": f, "shape": [n], "datatype": "BYTES" if schema.feature(f).kind == "categorical" else "FP64",
             "data": [r[f] for r in part]}
            for f in names
        ]  # fmt: skip
        out += [
            Case(f"churn {n:>3} rows V1 lists", schema, body={"instances": [[r[f] for f in names] for r in part]}),
            Case(f"churn {n:>3} rows V1 objects", schema, body={"instances": part}),
            Case(f"churn {n:>3} rows V2 inputs", schema, tensors=v2_tensors({"inputs": inputs})),
            Case(f"30 num {n:>3} rows V1 lists", wide_schema, body={"instances": wide_rows[:n]}),
        ]
    return out


def _frame(columns):
    import pandas as pd

    return pd.DataFrame(columns)


def _least(steps: dict, runs: int, repeat: int, fresh=None) -> dict[str, float]:
    """CPU seconds of this thread per call of each step, the least of ``repeat`` rounds of ``runs`` calls,
    the steps taking turns in every round (so a change in the machine's load hits them alike). The thread's
    CPU clock: what other processes on a shared machine do hardly moves it, where wall time doubles.
    ``fresh(name)``, when given, makes each round's argument (untimed)."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeat):
        for name, step in steps.items():
            arg = fresh(name) if fresh else None
            started = time.thread_time()
            for _ in range(runs):
                step(arg)
            best[name] = min(best[name], (time.thread_time() - started) / runs)
    return best


def request_path(case: Case, tmp: Path, journal: bool, repeat: int) -> dict[str, float]:
    writers = {
        name: CaptureWriter(
            LocalStore(tmp / "store"),
            "churn",
            batch_size=10**9,
            flush_interval_s=3600,
            max_buffer=10**9,
            journal_dir=tmp / f"journal-{name}-{case.label.replace(' ', '')}" if journal else None,
        )  # fmt: skip
        for name in ("records", "batch")
    }
    steps = {name: (lambda _, name=name: getattr(case, name)(writers[name])) for name in writers}
    try:
        return _least(steps, max(20, 2000 // case.n_rows), repeat)
    finally:
        for writer in writers.values():
            writer.close(timeout=0)  # nothing stored: the thread stops, the buffer is dropped


def writer_thread(case: Case, fmt: str, repeat: int) -> dict[str, float]:
    """Per request: encoding one object's worth (500 records) of requests, as the writer's thread does
    (fresh batches each round: the writer formats a batch's time once)."""
    requests = max(1, OBJECT_RECORDS // case.n_rows)

    def fresh(name):
        made = [getattr(case, name)(None) for _ in range(requests)]
        return [r for rs in made for r in rs] if name == "records" else made

    steps = {"records": lambda records: encode(records, fmt), "batch": lambda batches: encode_batches(batches, fmt)}
    return {name: cost / requests for name, cost in _least(steps, 1, repeat * 2, fresh).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # the writers stop with their records unwritten, on purpose
    repeat = 3 if args.quick else 7
    header = ("request", "where", "records us", "batch us", "ratio")
    print(f"capture CPU per request (us, least of {repeat}); ratio = records / batch (higher: batch cheaper)")
    print("{:<26} {:<26} {:>11} {:>9} {:>7}".format(*header))
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases():
            lines = [
                ("request path", request_path(case, Path(tmp), False, repeat)),
                ("request path + journal", request_path(case, Path(tmp), True, repeat)),
                ("writer thread, jsonl", writer_thread(case, "jsonl", repeat)),
                ("writer thread, parquet", writer_thread(case, "parquet", repeat)),
            ]
            for where, cost in lines:
                before, after = cost["records"] * 1e6, cost["batch"] * 1e6
                print(f"{case.label:<26} {where:<26} {before:>11,.1f} {after:>9,.1f} {before / after:>7.2f}")


if __name__ == "__main__":
    main()

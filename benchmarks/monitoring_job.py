"""Benchmark: the scheduled monitoring job's checks (``kfloop.monitoring.job.CHECKS``) on sample:churn.

    python benchmarks/monitoring_job.py                  # 100 clean windows of 500 rows, 20 shifted
    python benchmarks/monitoring_job.py --windows 200 --window-rows 1000

A booster and a drift baseline (scipy backend, 5,000 reference rows) are fitted on sample:churn
(seed 0); fresh customers (other seeds) are predicted and captured as the servers capture them, with
their true labels. Each check then runs alone over ``--windows`` clean windows and ``--shifted``
windows of shifted traffic: data drift (customers 15 years older, ``age_shift``) for feature drift,
concept drift (``concept_drift=1``) for quality. Prints, per signal: the alerts per 100 clean windows
(false alarms), the share of shifted windows detected, and the CPU per 1,000 rows (process time of the
check alone, the windows' encoding included, fastest of ``--repeat`` passes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import xgboost

from kfloop.monitoring.capture import capture_record
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.job import CHECKS, JobOptions, VersionInputs, Window
from kfloop.schema import infer_schema
from kfloop.training.samples import churn

TARGET = "churn"


def captured(booster, schema, frame: pd.DataFrame, prefix: str) -> tuple[list[dict], pd.DataFrame]:
    X = schema.encode_frame(frame)
    p = booster.predict(xgboost.DMatrix(X, feature_names=schema.names, feature_types=schema.feature_types,
                                        enable_categorical=True))  # fmt: skip
    features = frame[schema.names].astype(object).where(frame[schema.names].notna(), None).to_dict("records")
    records = [
        capture_record("churn", "1", f, [float(1 - q), float(q)], request_id=f"{prefix}{i}", capture_id=f"{prefix}{i}")
        for i, (f, q) in enumerate(zip(features, p))
    ]
    labeled = pd.DataFrame({"request_id": [r["request_id"] for r in records], TARGET: frame[TARGET].astype(str).values,
                            "prediction": [r["prediction"] for r in records]})  # fmt: skip
    return records, labeled


def windows(records, labeled, size: int, prefix: str) -> list[Window]:
    out = []
    for i in range(len(records) // size):
        rows = records[i * size : (i + 1) * size]
        out.append(Window("churn", "1", i, rows, labeled.iloc[i * size : (i + 1) * size], False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=100, help="clean windows (default 100)")
    parser.add_argument("--shifted", type=int, default=20, help="shifted windows (default 20)")
    parser.add_argument("--window-rows", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    train = churn(5000, seed=0)
    schema = infer_schema(train, TARGET)
    X = schema.encode_frame(train)
    dtrain = xgboost.DMatrix(X, schema.encode_labels(train[TARGET]), feature_names=schema.names,
                             feature_types=schema.feature_types, enable_categorical=True)  # fmt: skip
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 4, "seed": 0}, dtrain, 60)
    detector = fit_baseline(schema, X, backend="scipy")
    p = booster.predict(dtrain)
    accuracy = float(((p > 0.5) == (train[TARGET].values == schema.classes[1])).mean())
    inputs = VersionInputs("churn", "1", schema, detector, quality_threshold=accuracy * 0.9,
                           estimated_threshold=accuracy * 0.9)  # fmt: skip
    options = JobOptions(window_rows=args.window_rows)
    n = args.window_rows
    clean = windows(*captured(booster, schema, churn(n * args.windows, seed=1), "c"), n, "c")
    shifts = {
        "feature_drift": churn(n * args.shifted, seed=2, age_shift=15),
        "quality": churn(n * args.shifted, seed=2, concept_drift=1.0),
        "estimated_quality": churn(n * args.shifted, seed=2, age_shift=15),
    }
    print(f"{args.windows} clean and {args.shifted} shifted windows of {n} rows; baseline 5000 rows (scipy)")
    print(f"{'signal':<20} {'false alarms /100':>18} {'shifted detected':>17} {'CPU ms /1000 rows':>18}  shift")
    for signal, check in CHECKS.items():
        shifted = windows(*captured(booster, schema, shifts[signal], "s"), n, "s")
        alarms = sum(check(w, inputs, options).alerting for w in clean)
        detected = sum(check(w, inputs, options).alerting for w in shifted)
        best = float("inf")
        for _ in range(args.repeat):
            fresh = windows(*captured(booster, schema, churn(n * 10, seed=3), "r"), n, "r")  # no cached matrices
            started = time.process_time()
            for w in fresh:
                check(w, inputs, options)
            best = min(best, (time.process_time() - started) / (len(fresh) * n) * 1000 * 1000)
        what = "concept_drift=1" if signal == "quality" else "age_shift=15"
        print(
            f"{signal:<20} {100 * alarms / len(clean):>18.1f} {f'{detected}/{len(shifted)}':>17} {best:>18.2f}  {what}"
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

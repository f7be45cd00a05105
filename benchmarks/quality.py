"""Benchmark: the data-quality and prediction-drift checks on sample:churn windows, beside the
feature-drift test: detection delay of injected shifts, false alarms over clean windows, CPU.

    python benchmarks/quality.py                 # windows of 200 rows (the demo's), 100 clean windows
    python benchmarks/quality.py --window 500 --clean 300

A model is trained as the pipeline trains it (4,000 training rows of sample:churn, early stopping
on 1,000 more) and its baseline computed as the baseline step does (features of the training rows,
predictions on the validation rows). Each shift (a churn knob) starts
at a window boundary; its delay is the number of the first alerting window after it (1: the first
shifted window), over ``--streams`` streams of ``--max-windows`` windows. CPU is process time per
1,000 window rows (decoding and predicting excluded), measured in this run on the clean windows.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kfloop.inference.requests import RequestDecoder
from kfloop.monitoring import constraints
from kfloop.monitoring.data_quality import check_data_quality
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.prediction_drift import check_prediction_drift
from kfloop.schema import infer_schema
from kfloop.training.booster import TrainParams, predict, train
from kfloop.training.samples import churn

SHIFTS = [
    ("data_quality", "missing_rate=0.1", {"missing_rate": 0.1}),
    ("data_quality", "charges_scale=10", {"charges_scale": 10.0}),
    ("data_quality", "unseen_rate=0.03", {"unseen_rate": 0.03}),
    ("prediction_drift", "contract_shift=0.5", {"contract_shift": 0.5}),
    ("prediction_drift", "contract_shift=1", {"contract_shift": 1.0}),
    ("feature_drift", "contract_shift=0.5", {"contract_shift": 0.5}),
    ("feature_drift", "age_shift=15", {"age_shift": 15.0}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=int, default=200, help="rows per window (default 200)")
    parser.add_argument("--clean", type=int, default=100, help="clean windows for false alarms and CPU")
    parser.add_argument("--streams", type=int, default=10, help="shifted streams per shift")
    parser.add_argument("--max-windows", type=int, default=10, help="windows per shifted stream")
    args = parser.parse_args()

    data = churn(5000, seed=0)
    schema = infer_schema(data, "churn")
    booster = train(schema, data.iloc[:4000], data.iloc[4000:], TrainParams(nthread=1))
    X_train = schema.encode_frame(data.iloc[:4000])
    X_valid = schema.encode_frame(data.iloc[4000:])
    baseline = constraints.compute(schema, X_train, predict(booster, schema, X_valid), prediction_rows="validation")
    detector = fit_baseline(schema, X_train, backend="scipy")
    decoder = RequestDecoder(schema)

    def window(seed: int, **knobs):
        frame = churn(args.window, seed=seed, **knobs).drop(columns="churn")
        decoded = decoder.decode_v1({"instances": frame.astype(object).where(frame.notna(), None).to_dict("records")})
        return decoded, predict(booster, schema, decoded.X)

    checks = {
        "data_quality": lambda d, p: check_data_quality(baseline, d.X, d.unseen).alerting,
        "prediction_drift": lambda d, p: check_prediction_drift(baseline, p).alerting,
        "feature_drift": lambda d, p: bool(detector.predict(d.X)["data"]["is_drift"]),
    }
    alarms = dict.fromkeys(checks, 0)
    cpu = dict.fromkeys(checks, 0.0)
    for seed in range(10_000, 10_000 + args.clean):
        decoded, answers = window(seed)
        for name, check in checks.items():
            began = time.process_time()
            alarms[name] += check(decoded, answers)
            cpu[name] += time.process_time() - began

    rows = []
    for signal, label, knobs in SHIFTS:
        delays = []
        for stream in range(args.streams):
            for i in range(1, args.max_windows + 1):
                decoded, answers = window(20_000 + 100 * stream + i, **knobs)
                if checks[signal](decoded, answers):
                    delays.append(i)
                    break
        rows.append((signal, label, delays))

    per_100 = 100 / args.clean
    per_1000_rows = 1000 / (args.clean * args.window) * 1000  # ms per 1,000 rows
    print(f"windows of {args.window} rows; {args.clean} clean windows; {args.streams} streams per shift")
    print(
        f"{'signal':<18} {'injected shift':<20} {'detected':>9} {'delay (windows)':>16} "
        f"{'false alarms /100':>18} {'CPU ms /1,000 rows':>19}"
    )
    for signal, label, delays in rows:
        delay = f"{statistics.median(delays):g} (max {max(delays)})" if delays else "-"
        print(
            f"{signal:<18} {label:<20} {len(delays):>4}/{args.streams:<4} {delay:>16} "
            f"{alarms[signal] * per_100:>18.1f} {cpu[signal] * per_1000_rows:>19.2f}"
        )


if __name__ == "__main__":
    main()

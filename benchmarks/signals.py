"""Benchmark: the monitoring signals of the scheduled job (multivariate, attribution and bias drift,
calibrated estimated quality) on sample:churn windows: detection delay, false alarms, CPU per 1,000 rows.

    python benchmarks/signals.py                  # 100 clean windows per signal
    python benchmarks/signals.py --clean 20       # quicker

One model is trained on sample:churn (5,000 rows, seed 0; one thread) and its signal baselines are
fitted on the validation split, as the pipeline's signal-baselines step does. Each signal then sees
``--clean`` clean windows (fresh seeds: false alarms per 100 clean windows) and a stream of windows
carrying its own injected shift (detection delay: the number of shifted windows until the first alert,
1 = the first one), with its defaults:

- multivariate drift: ``joint_shift=1`` (total charges permuted, marginals unchanged), 500 rows;
- attribution drift: ``attribution_shift=1`` (support calls drive the score), 500 rows;
- estimated quality (CBPE): ``attribution_shift=1`` (customers moved where the model is unsure), 500 rows;
- bias drift: ``senior_churn=2`` (labels of customers aged 60+), 1,000 labeled rows, groups under 60
  and 60+ (a 500-row window has about 45 seniors: insufficient).

CPU is the process CPU time (all threads) of the signal's call alone, per 1,000 window rows; the
window's rows are generated and encoded outside it. Figures vary with the machine; the ratios between
signals hold.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kfloop.monitoring.attribution import attribution_baseline, attribution_drift
from kfloop.monitoring.bias_drift import bias_drift
from kfloop.monitoring.estimation import estimated_quality_signal, fit_estimator
from kfloop.monitoring.multivariate import multivariate_drift
from kfloop.schema import infer_schema
from kfloop.training import booster as train
from kfloop.training.samples import churn

SENIORS = [18, 60, 120]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", type=int, default=100, help="clean windows per signal (default 100)")
    parser.add_argument("--shifted", type=int, default=5, help="shifted windows per signal at most (default 5)")
    args = parser.parse_args()
    frame = churn(5000, seed=0)
    schema = infer_schema(frame, "churn")
    booster = train.train(schema, frame.iloc[:3500], frame.iloc[3500:4250], train.TrainParams(nthread=1))
    valid = frame.iloc[3500:4250]
    reference = schema.encode_frame(frame.iloc[:3500])
    attribution = attribution_baseline(booster, schema, schema.encode_frame(valid))
    estimator = fit_estimator(booster, schema, valid)

    def scored(rows):
        return train.predict(booster, schema, schema.encode_frame(rows)).tolist()

    signals = {
        "multivariate_drift": (500, {"joint_shift": 1.0}, lambda w: multivariate_drift(schema, reference, _X(w))),
        "attribution_drift": (
            500,
            {"attribution_shift": 1.0},
            lambda w: attribution_drift(booster, schema, attribution, _X(w)),
        ),
        "estimated_quality": (500, {"attribution_shift": 1.0}, lambda w: estimated_quality_signal(estimator, w[1])),
        "bias_drift": (1000, {"senior_churn": 2.0}, lambda w: bias_drift(schema, w[2], "age", edges=SENIORS)),
    }

    def _X(window):
        return window[0]

    def window(n, seed, **knobs):
        rows = churn(n, seed=seed, **knobs)
        pred = scored(rows)
        labeled = rows.assign(prediction=pred, churn=rows["churn"].astype(str))
        return schema.encode_frame(rows), pred, labeled

    print(f"{'signal':<20} {'rows':>5} {'delay (windows)':>16} {'false alarms /100':>18} {'CPU ms /1k rows':>16}")
    for name, (rows, knobs, check) in signals.items():
        alarms, cpu = 0, []
        for s in range(args.clean):
            w = window(rows, 10_000 + s)
            start = time.process_time()
            result = check(w)
            cpu.append(time.process_time() - start)
            alarms += result.status == "alert"
        delay = None
        for i in range(args.shifted):
            if check(window(rows, 20_000 + i, **knobs)).status == "alert":
                delay = i + 1
                break
        shown = "not detected" if delay is None else str(delay)
        per_k = 1000 * float(np.mean(cpu)) / rows * 1000
        rate = 100 * alarms / args.clean
        print(f"{name:<20} {rows:>5} {shown:>16} {rate:>18.1f} {per_k:>16.1f}")


if __name__ == "__main__":
    main()

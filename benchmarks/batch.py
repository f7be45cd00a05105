"""Benchmark: batch inference (`kfloop.batch.job.run_batch`, what the pipeline's step runs) against
xgboost's `inplace_predict` on the same rows, and batch's peak memory at two input sizes.

    python benchmarks/batch.py                    # 100k and 1M rows, Parquet and CSV input
    python benchmarks/batch.py --rows 1000000 --formats parquet

The model is trained and registered by the pipeline's own steps on sample:churn (defaults). For each
input, in fresh processes: `inplace_predict` is timed alone, on the rows already loaded and encoded
in memory (the floor: no reading, validation, writing, capture or drift), and batch is timed end to end
(read in chunks, validate, encode, predict, write predictions and rejects, capture, drift per chunk,
commit), and again without capture records. Each is run ``--repeat`` times in its process and the
fastest run counts, for both alike (the machine is shared: a single run measures the neighbours).
Prints rows/s of each, their ratio (target at 1M rows: batch >= 0.8x) and peak RSS (target: batch's
does not grow with the input; the floor holds the whole input in memory). Batch's clock starts after
its imports (Alibi Detect's take ~3 s), as the floor's does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SETUP = """
import sys, tempfile
from pathlib import Path
from kfloop.config import Settings
from kfloop.steps.baseline import fit_drift_baseline
from kfloop.steps.evaluate import evaluate_model
from kfloop.steps.process import process
from kfloop.steps.register import register
from kfloop.steps.train import train_model
from kfloop.training.evaluate import AUTO_THRESHOLD
from kfloop.training.samples import load_sample
settings, out = Settings(home=Path(sys.argv[1])), Path(tempfile.mkdtemp())
process("sample:churn", "churn", settings, out / "train.parquet", out / "valid.parquet", out / "test.parquet",
        out / "schema.json", out / "quality.md")
train_model(out / "train.parquet", out / "valid.parquet", out / "schema.json", {}, out / "model")
evaluate_model(out / "model", out / "test.parquet", "churn", settings, out / "evaluation.json", AUTO_THRESHOLD, 0.01,
               out / "train.parquet")
fit_drift_baseline(out / "model", out / "train.parquet", out / "drift")
print(register("churn", settings, str(out / "model"), str(out / "evaluation.json"), None, str(out / "drift"), {}).ref)
for rows in map(int, sys.argv[3].split(",")):
    frame = load_sample(f"churn?n_rows={rows}&seed=7")
    frame.to_parquet(Path(sys.argv[2]) / f"in-{rows}.parquet", index=False)
    frame.to_csv(Path(sys.argv[2]) / f"in-{rows}.csv", index=False)
"""

FLOOR = """
import json, resource, sys, tempfile, time
from pathlib import Path
from kfloop.config import Settings
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from kfloop.training.booster import load_model, predict
from kfloop.training.data import load_source
_, path = Registry(open_store(Settings(home=Path(sys.argv[1])))).fetch_bundle(sys.argv[2], tempfile.mkdtemp())
booster, schema = load_model(path / bundle.MODEL_FILE), bundle.load_schema(path)
X = schema.encode_frame(load_source(sys.argv[3], Settings()).frame)
times = []
for _ in range(int(sys.argv[4])):
    started = time.perf_counter()
    predict(booster, schema, X)
    times.append(time.perf_counter() - started)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": min(times), "rows": len(X), "peak_mb": peak}))
"""

BATCH = """
import json, resource, sys, time
from pathlib import Path
import alibi_detect.cd  # imported before the clock starts, as the floor's imports are (~3 s, once per process)
from kfloop.batch.job import BatchOptions, run_batch
from kfloop.config import Settings
settings = Settings(home=Path(sys.argv[1]))
options = BatchOptions(sys.argv[2], sys.argv[3], sys.argv[4], capture=sys.argv[5] == "capture")
times = []
for _ in range(int(sys.argv[6])):
    started = time.perf_counter()
    summary = run_batch(options, settings, progress=lambda line: None)
    times.append(time.perf_counter() - started)
seconds = min(times)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rows": summary["predicted"], "peak_mb": peak}))
"""

HEADER = ("input", "inplace_predict rows/s", "batch rows/s", "ratio", "no capture", "ratio", "floor MB", "batch MB")


def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="input sizes, comma-separated")
    parser.add_argument("--formats", default="parquet,csv", help="input formats: parquet, csv")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each in its process; the fastest counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home, data = Path(tmp) / "home", Path(tmp)
        setup = subprocess.run(
            [sys.executable, "-c", SETUP, str(home), str(data), args.rows], capture_output=True, text=True
        )
        if setup.returncode:
            raise SystemExit(setup.stderr)
        ref = setup.stdout.split()[0]
        print(f"model {ref} (pipeline steps on sample:churn, defaults); batch: 100000-row chunks, drift on")
        print("{:<18} {:>22} {:>13} {:>6} {:>11} {:>6} {:>9} {:>9}".format(*HEADER))
        for fmt in args.formats.split(","):
            for rows in args.rows.split(","):
                source, out = str(data / f"in-{rows}.{fmt}"), str(data / f"out-{rows}-{fmt}.parquet")
                repeat = str(args.repeat)
                floor = _run(FLOOR, str(home), ref, source, repeat)
                batch = _run(BATCH, str(home), ref, source, out, "capture", repeat)
                bare = _run(BATCH, str(home), ref, source, out, "no-capture", repeat)
                rate = {
                    name: r["rows"] / r["seconds"] for name, r in (("floor", floor), ("batch", batch), ("bare", bare))
                }
                print(
                    f"{int(rows):>9,} {fmt:<8} {rate['floor']:>22,.0f} {rate['batch']:>13,.0f} "
                    f"{rate['batch'] / rate['floor']:>6.2f} {rate['bare']:>11,.0f} "
                    f"{rate['bare'] / rate['floor']:>6.2f} "
                    f"{floor['peak_mb']:>9,.0f} {batch['peak_mb']:>9,.0f}"
                )


if __name__ == "__main__":
    main()

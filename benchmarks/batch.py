"""Benchmark: batch inference (`kfloop.batch.job.run_batch`, what the pipeline's step runs) against
xgboost's `inplace_predict` on the same rows, and batch's peak memory at two input sizes.

    python benchmarks/batch.py                    # 100k and 1M rows, Parquet and CSV input
    python benchmarks/batch.py --rows 1000000 --formats parquet

The model is trained and registered by the pipeline's own steps on sample:churn (defaults). For each
input, in fresh processes: `inplace_predict` is timed alone, on the rows already loaded and encoded
in memory (the floor: no reading, validation, writing, capture or drift), and batch is timed end to end
(read in chunks, validate, encode, predict, write predictions and rejects, capture, drift per chunk,
commit), and again without capture records. Each kind loads once in a process of its own, then the
three take turns, ``--repeat`` runs each, and the fastest run of each counts (the machine is shared: a
single run measures the neighbours, and taking turns spreads a change in their load over all three).
Prints rows/s of each, their ratio (target at 1M rows: batch >= 0.8x), the CPU ratios (the floor's CPU
seconds, all threads, over batch's, with and without capture: what batch costs beyond prediction, hardly
moved by the machine's load), peak RSS (target: batch's does not grow with the input; the floor holds
the whole input in memory), and the load average before and after. Clocks start after the imports
(Alibi Detect's take ~3 s) and the floor's load.
"""

from __future__ import annotations

import argparse
import json
import os
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
fit_drift_baseline(out / "model", out / "train.parquet", out / "drift", valid_path=out / "valid.parquet")
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
def run():
    predict(booster, schema, X)
    return len(X)
"""

BATCH = """
import json, resource, sys, time
from pathlib import Path
import alibi_detect.cd  # imported before the clock starts, as the floor's imports are (~3 s, once per process)
from kfloop.batch.job import BatchOptions, run_batch
from kfloop.config import Settings
settings = Settings(home=Path(sys.argv[1]))
options = BatchOptions(sys.argv[2], sys.argv[3], sys.argv[4], capture=sys.argv[5] == "capture")
def run():
    return run_batch(options, settings, progress=lambda line: None)["predicted"]
"""

SERVE = """
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    if line.strip() != "run":
        break
    started, used = time.perf_counter(), cpu()
    rows = run()
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": cpu() - used, "rows": rows}), flush=True)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
"""

HEADER = (
    "input", "inplace_predict rows/s", "batch rows/s", "ratio", "no capture", "ratio", "CPU ratio", "no capture",
    "floor MB", "batch MB",
)  # fmt: skip


class Worker:
    """A process that loads once, then times one run per ``run()`` call (wall and CPU seconds, all threads)."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code + SERVE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise SystemExit(f"a benchmark process failed (exit code {self.proc.returncode})")
        return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> float:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        peak = self._read()["peak_mb"]
        self.proc.wait()
        return peak


def measure(home: Path, ref: str, source: str, out: str, repeat: int) -> dict[str, dict]:
    """Each kind's fastest run (wall) and least CPU, the kinds taking turns run by run."""
    workers = {
        "floor": Worker(FLOOR, str(home), ref, source),
        "batch": Worker(BATCH, str(home), ref, source, out, "capture"),
        "bare": Worker(BATCH, str(home), ref, source, out, "no-capture"),
    }
    best: dict[str, dict] = {k: {"seconds": float("inf"), "cpu": float("inf")} for k in workers}
    try:
        for _ in range(repeat):
            for kind, worker in workers.items():
                result = worker.run()
                best[kind]["rows"] = result["rows"]
                best[kind]["seconds"] = min(best[kind]["seconds"], result["seconds"])
                best[kind]["cpu"] = min(best[kind]["cpu"], result["cpu"])
    finally:
        for kind, worker in workers.items():
            best[kind]["peak_mb"] = worker.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="input sizes, comma-separated")
    parser.add_argument("--formats", default="parquet,csv", help="input formats: parquet, csv")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (taking turns); the fastest counts")
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
        print(f"load average {_load()} ({os.cpu_count()} CPUs)")
        print("{:<18} {:>22} {:>13} {:>6} {:>11} {:>6} {:>9} {:>10} {:>9} {:>9}".format(*HEADER))
        for fmt in args.formats.split(","):
            for rows in args.rows.split(","):
                source, out = str(data / f"in-{rows}.{fmt}"), str(data / f"out-{rows}-{fmt}.parquet")
                r = measure(home, ref, source, out, args.repeat)
                rate = {kind: m["rows"] / m["seconds"] for kind, m in r.items()}
                print(
                    f"{int(rows):>9,} {fmt:<8} {rate['floor']:>22,.0f} {rate['batch']:>13,.0f} "
                    f"{rate['batch'] / rate['floor']:>6.2f} {rate['bare']:>11,.0f} "
                    f"{rate['bare'] / rate['floor']:>6.2f} {r['floor']['cpu'] / r['batch']['cpu']:>9.2f} "
                    f"{r['floor']['cpu'] / r['bare']['cpu']:>10.2f} "
                    f"{r['floor']['peak_mb']:>9,.0f} {r['batch']['peak_mb']:>9,.0f}",
                    flush=True,
                )
        print(f"load average {_load()}")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()

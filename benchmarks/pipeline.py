"""Benchmark: `kfloop pipeline run` (kfp.local, one process per step) against the floor, the same
steps called directly in one Python process, on sample:churn at several sizes.

    python benchmarks/pipeline.py                 # 10k, 100k, 1M rows
    python benchmarks/pipeline.py --rows 10000    # one size

Prints wall time and peak RSS of each, their ratio, and peak RSS over the raw data's in-memory
size (targets at 1M rows: pipeline within 1.5x of the floor's time; peak memory under 3x the
raw data). Peak RSS is the largest single process's (steps run one after another); it includes
the interpreter and its imports, which the floor pays too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

FLOOR = """
import sys, tempfile
from pathlib import Path
from kfloop.steps.analyze import analyze
from kfloop.steps.baseline import fit_drift_baseline
from kfloop.steps.evaluate import evaluate_model
from kfloop.steps.process import process
from kfloop.steps.register import register
from kfloop.steps.signals import fit_signal_baselines
from kfloop.steps.train import train_model
from kfloop.config import Settings
settings = Settings(home=Path(sys.argv[2]))
out = Path(tempfile.mkdtemp())
info = process(f"sample:churn?n_rows={sys.argv[1]}", "churn", settings, out / "train.parquet",
                     out / "valid.parquet", out / "test.parquet", out / "schema.json", out / "quality.md")
train_model(out / "train.parquet", out / "valid.parquet", out / "schema.json", {}, out / "model")
evaluate_model(
    out / "model", out / "test.parquet", "churn", settings, out / "evaluation.json", -1.0, 0.01, out / "train.parquet",
    sensitive_feature="age",
)
analyze(out / "model", out / "test.parquet", "age", out / "analysis.json", out / "report.md",
              out / "evaluation.json")
fit_drift_baseline(out / "model", out / "train.parquet", out / "drift", valid_path=out / "valid.parquet")
fit_signal_baselines(out / "model", out / "valid.parquet", out / "signals")
lineage = {"data_uri": info["data_uri"], "data_sha256": info["data_sha256"]}
print(register("churn", settings, out / "model", out / "evaluation.json", out / "analysis.json",
                     out / "drift", lineage, signals_dir=out / "signals").ref)
"""


def measure(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS in MB of the process and its descendants (wait4 reports both)."""
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{err.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def raw_size_mb(rows: int) -> float:
    from kfloop.training import samples

    return samples.churn(n_rows=rows).memory_usage(deep=True).sum() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="sizes (default 10k, 100k, 1M)")
    sizes = sorted(parser.parse_args().rows or [10_000, 100_000, 1_000_000])
    rows_out = []
    for rows in sizes:
        with tempfile.TemporaryDirectory() as floor_home, tempfile.TemporaryDirectory() as run_home:
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            print(f"[{rows:>9,} rows] floor ...", file=sys.stderr, flush=True)
            floor_s, floor_mb = measure([sys.executable, "-c", FLOOR, str(rows), floor_home], env)
            print(f"[{rows:>9,} rows] pipeline ...", file=sys.stderr, flush=True)
            cmd = [
                sys.executable,
                "-m",
                "kfloop.cli",
                "--home",
                run_home,
                "pipeline",
                "run",
                "--data",
                f"sample:churn?n_rows={rows}",
            ]
            run_s, run_mb = measure(cmd, env)
        raw = raw_size_mb(rows)
        rows_out.append((rows, floor_s, run_s, floor_mb, run_mb, raw))
    print(
        f"{'rows':>10} {'floor s':>8} {'pipeline s':>10} {'ratio':>6} {'floor MB':>9} {'pipeline MB':>11} "
        f"{'raw MB':>7} {'peak/raw':>8}"
    )
    for rows, floor_s, run_s, floor_mb, run_mb, raw in rows_out:
        print(
            f"{rows:>10,} {floor_s:>8.1f} {run_s:>10.1f} {run_s / floor_s:>6.2f} {floor_mb:>9.0f} "
            f"{run_mb:>11.0f} {raw:>7.0f} {run_mb / raw:>8.2f}"
        )


if __name__ == "__main__":
    main()

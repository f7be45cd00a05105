"""Benchmark: start-up of the ``kfloop`` command, ``kfloop --help`` and a few commands' ``--help``,
against the floor, ``python -c pass`` (the interpreter alone).

    python benchmarks/cli_startup.py              # 20 runs of each
    python benchmarks/cli_startup.py --runs 50

Prints the median, fastest and slowest wall time of each, and the median over the floor's (what
kfloop itself costs). Target: ``kfloop --help`` under 0.3 s. Runs the ``kfloop`` entry point next to
this interpreter (the virtualenv's), else ``python -m kfloop.cli``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HELPS = (
    (),
    ("pipeline", "run"),
    ("rollout", "analyze"),
    ("serve",),
    ("registry", "list"),
)


def kfloop_command() -> list[str]:
    script = Path(sys.executable).parent / "kfloop"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kfloop.cli"]


def wall_times(cmd: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of ``cmd`` (after one untimed run that warms the file cache)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        if i:
            times.append(wall)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each command (default 20)")
    runs = parser.parse_args().runs
    kfloop = kfloop_command()
    cases = [("python -c pass", [sys.executable, "-c", "pass"])]
    cases += [(" ".join(("kfloop", *path, "--help")), [*kfloop, *path, "--help"]) for path in HELPS]
    rows = []
    for label, cmd in cases:
        print(f"{label} ...", file=sys.stderr, flush=True)
        rows.append((label, wall_times(cmd, runs)))
    floor = statistics.median(rows[0][1])
    print(f"{'command':<32} {'median':>9} {'fastest':>9} {'slowest':>9} {'over floor':>11}   ({runs} runs each)")
    for label, times in rows:
        median = statistics.median(times)
        print(
            f"{label:<32} {median * 1000:>7.0f}ms {min(times) * 1000:>7.0f}ms {max(times) * 1000:>7.0f}ms "
            f"{(median - floor) * 1000:>9.0f}ms"
        )


if __name__ == "__main__":
    main()

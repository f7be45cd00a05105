"""Benchmark: drift coverage at fixed row rates, the transformer's drift monitor fed directly.

    python benchmarks/drift_coverage.py                    # 10k, 25k, 50k, 100k rows/s, 10 s each
    python benchmarks/drift_coverage.py --rates 50000 --seconds 20
    python benchmarks/drift_coverage.py --rates 5000 --request-rows 1   # one-row requests

One transformer process serves at most ~20,000 rows/s on a loaded 2-core machine, so the serving
benchmark cannot reach issue 13's 50,000 rows/s; this one feeds a ``DriftMonitor`` set up as the
transformer sets it up (windows of 500 rows, the default ``cpu_share`` 0.25, data-quality and
prediction-drift checks from the bundle's baseline, a window log and an outbox) with 100-row requests
(``--request-rows``) and their predictions at a fixed rate from another thread, and prints per rate:
coverage (rows checked / rows offered), the rows skipped while the monitor rested and dropped from a
full queue, the checks' CPU per window (``time.thread_time``, what the cap measures) and the share of
a core they used. Models: numeric30 (30 numeric features, trained as ``benchmarks/serving.py`` trains it) and churn.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # noqa: E402  (the serving benchmark's models, built the same way)
from kfloop.events.outbox import Outbox  # noqa: E402
from kfloop.monitoring.drift_monitor import DEFAULT_CPU_SHARE, DriftMonitor  # noqa: E402
from kfloop.monitoring.drift_window import WindowedDrift  # noqa: E402
from kfloop.monitoring.quality_window import WindowedQuality  # noqa: E402
from kfloop.monitoring.versions import load_reference  # noqa: E402
from kfloop.monitoring.window_log import WindowLog  # noqa: E402
from kfloop.store.objects import LocalStore  # noqa: E402

REQUEST_ROWS = 100
WINDOW = 500


def feed(monitor: DriftMonitor, X: np.ndarray, predictions: list, rate: float, seconds: float, rows: int) -> float:
    """Submit ``rows``-row slices of ``X`` (and their predictions) at ``rate`` rows/s for ``seconds``; the
    elapsed seconds."""
    interval, began = rows / rate, time.monotonic()
    i = 0
    while (now := time.monotonic()) - began < seconds:
        at = (i * rows) % (len(X) - rows)
        monitor.submit(X[at : at + rows], predictions[at : at + rows], {})
        i += 1
        wait = began + i * interval - now
        if wait > 0:
            time.sleep(wait)
    return time.monotonic() - began


def run(
    name: str, bundle: Path, X: np.ndarray, predictions: list, rate: float, seconds: float, rows: int, work: Path
) -> dict:
    ref = load_reference(bundle, "1")
    folder = Path(tempfile.mkdtemp(dir=work))
    monitor = DriftMonitor(
        WindowedDrift(ref.detector, WINDOW),
        Outbox(folder / "outbox", None),
        f"kfloop/{name}",
        {"model": name, "model_version": "1"},
        cpu_share=DEFAULT_CPU_SHARE,
        window_log=WindowLog(LocalStore(folder / "store")),
        quality=None if ref.baseline is None else WindowedQuality(ref.baseline, WINDOW, lambda: 0),
    )
    feeder = threading.Thread(target=lambda: out.update(elapsed=feed(monitor, X, predictions, rate, seconds, rows)))
    out: dict = {}
    feeder.start()
    feeder.join()
    offered = monitor.rows_submitted + monitor.rows_skipped + monitor.rows_dropped
    checked_during = monitor.rows_checked  # before stop() checks what is still queued
    monitor.stop(30)
    return {
        "rate": offered / out["elapsed"],
        "coverage": monitor.rows_checked / offered,
        "checked_during": checked_during / offered,
        "skipped": monitor.rows_skipped / offered,
        "dropped": monitor.rows_dropped / offered,
        "ms_per_window": monitor.check_cpu_s * 1e3 / max(monitor.windows_checked, 1),
        "share": monitor.check_cpu_s / out["elapsed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10000,25000,50000,100000", help="rows/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate (default 10)")
    parser.add_argument("--rows", type=int, default=10_000, help="training rows per model (default 10000)")
    parser.add_argument(
        "--request-rows", type=int, default=REQUEST_ROWS, help=f"rows per request (default {REQUEST_ROWS})"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="kfloop-drift-coverage-") as tmp:
        work = Path(tmp)
        serving.log("building the churn and numeric30 bundles")
        models = serving.build_models(work, args.rows, "scipy")
        numeric = serving.build_numeric_model(work, args.rows, "scipy")
        cases = (
            ("numeric30", numeric.bundle, numeric.X, numeric.booster),
            ("churn", models.bundle, models.X, models.booster),
        )
        print(
            f"{'model':<10} {'rows/s':>8} {'coverage':>9} {'(checked while fed)':>20} {'skipped':>8} {'dropped':>8} "
            f"{'CPU ms/window':>14} {'core share':>11}"
        )
        for name, bundle, X, booster in cases:
            predictions = booster.inplace_predict(X).tolist()
            for rate in rates:
                r = run(name, bundle, X, predictions, rate, args.seconds, args.request_rows, work)
                print(
                    f"{name:<10} {r['rate']:>8.0f} {r['coverage']:>9.1%} {r['checked_during']:>20.1%} "
                    f"{r['skipped']:>8.1%} {r['dropped']:>8.1%} {r['ms_per_window']:>14.2f} {r['share']:>11.2f}",
                    flush=True,
                )
    print(
        f"(cpu_share {DEFAULT_CPU_SHARE}: the checks earn that share of a core and rest when a check leaves them "
        "in debt; rows offered meanwhile are skipped; coverage counts the rows queued at the end, checked at stop)"
    )


if __name__ == "__main__":
    main()

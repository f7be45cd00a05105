"""Benchmark: how fast the local loop reacts to drift, at the sizes of ``kfloop demo``.

    python benchmarks/loop.py              # one demo run at its default sizes
    python benchmarks/loop.py --runs 3     # three runs (each in a fresh KFLOOP_HOME), and the median
    python benchmarks/loop.py --fast       # the CI sizes of kfloop demo --fast

Runs ``kfloop.demo.run.run_demo`` and reads its timeline: from the first drifted request (the traffic
switches to customers 15 years older) to (a) the drift event (the transformer's CloudEvent time),
(b) the retraining run started (the trigger's retrain.started), (c) the new version serving as a
canary (seen on the gateway), (d) promoted (the canary analysis's final decision); and the
drifted traffic served before the detection, in requests and in drift windows (counting the
window the drift started in). Targets: drift detected within 2 windows of the onset, promoted
within 120 s of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

from kfloop.config import Settings
from kfloop.demo.run import DemoOptions, run_demo
from kfloop.demo.timeline import Timeline

TARGET_WINDOWS = 2
TARGET_PROMOTED_S = 120.0
ROWS = (
    ("drift event (s)", "drift_detected", None),
    ("retraining run started (s)", "run_started", None),
    ("new version serving as canary (s)", "canary_serving", None),
    ("promoted (s)", "promoted", TARGET_PROMOTED_S),
)


def measures(timeline: Timeline) -> dict[str, float | None]:
    """Seconds from the drift onset to each milestone, and the drifted traffic before detection."""
    onset = timeline.first("drift_onset")
    out: dict[str, float | None] = {}
    for label, kind, _ in ROWS:
        entry = timeline.first(kind)
        out[label] = round(entry.epoch - onset.epoch, 1) if entry and onset else None
    detected = timeline.first("drift_detected")
    data = detected.data if detected else {}
    out["drifted requests before detection"] = data.get("drifted_requests")
    out["drift windows to detection"] = data.get("windows_after_onset")
    return out


def run_once(options: DemoOptions, quiet: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="kfloop-loop-") as home:
        report = Path(home) / "report.html"
        result = run_demo(
            Settings(home=Path(home)),
            dataclasses.replace(options, report=report),
            out=(lambda line: None) if quiet else None,
        )
        return measures(result.timeline)


def table(runs: list[dict], options: DemoOptions) -> str:
    labels = [label for label, _, _ in ROWS] + ["drifted requests before detection", "drift windows to detection"]
    targets = {label: target for label, _, target in ROWS}
    head = ["measure"] + [f"run {i + 1}" for i in range(len(runs))] + (["median"] if len(runs) > 1 else []) + ["target"]
    lines = [head]
    for label in labels:
        values = [r.get(label) for r in runs]
        known = [v for v in values if v is not None]
        median = statistics.median(known) if known else None
        shown = values + ([median] if len(runs) > 1 else [])
        lines.append([label] + [_fmt(v) for v in shown] + [_target(label, median, targets)])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    sizes = (
        f"{options.rows} training rows, drift windows of {options.window} rows, "
        f"{options.requests_per_second:g} requests/s of {options.rows_per_request} rows"
    )
    return "\n".join([f"loop latency from the first drifted request ({sizes})", *text])


def _target(label: str, value, targets: dict) -> str:
    if label == "drift windows to detection":
        limit, ok = f"<= {TARGET_WINDOWS}", value is not None and value <= TARGET_WINDOWS
    elif targets.get(label) is not None:
        limit, ok = f"<= {targets[label]:g}", value is not None and value <= targets[label]
    else:
        return ""
    return f"{limit} {'PASS' if ok else 'FAIL'}"


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="demo runs (default 1)")
    parser.add_argument("--fast", action="store_true", help="the sizes of kfloop demo --fast")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run (+1 per run)")
    parser.add_argument("--quiet", action="store_true", help="do not print the demos' timelines")
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.runs):
        options = DemoOptions.fast(seed=args.seed + i) if args.fast else DemoOptions(seed=args.seed + i)
        runs.append(run_once(options, args.quiet))
    print()
    print(table(runs, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())

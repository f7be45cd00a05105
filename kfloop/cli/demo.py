"""``kfloop demo``: the closed loop on one machine in one command (``kfloop.demo``).

Prints the timeline as it goes and the report's path at the end; exits 1 (after stopping
everything it started) when a step fails, naming the step and its log; Ctrl-C or SIGTERM stop it.
"""

from __future__ import annotations

import signal
from pathlib import Path

from kfloop.config import Settings
from kfloop.errors import ConfigError


def add_commands(groups) -> None:
    demo = groups.add_parser(
        "demo",
        help="the whole loop on sample:churn: train, serve, drift, retrain, canary, rollback, report (about 2 minutes)",
    )
    demo.add_argument("--port", type=int, help="gateway port on 127.0.0.1 (default: a free one)")
    demo.add_argument("--rows", type=int, help="training rows of the first version (default 5000, --fast 2000)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the traffic (default 0)")
    demo.add_argument(
        "--report",
        type=Path,
        default=Path("kfloop-report.html"),
        help="where to write the HTML report (default ./kfloop-report.html)",
    )
    demo.add_argument("--fast", action="store_true", help="the CI size: fewer rows, smaller drift windows")
    demo.add_argument("--keep-serving", action="store_true", help="leave the model served at the end (Ctrl-C stops it)")
    demo.add_argument("--model", help="model name (default churn, or churn-N when churn exists in KFLOOP_HOME)")
    demo.set_defaults(handler=demo_command)


def demo_command(args, settings: Settings) -> int:
    from kfloop.demo.run import DemoOptions, run_demo

    changes = {
        "port": args.port,
        "seed": args.seed,
        "report": args.report,
        "keep_serving": args.keep_serving,
        "model": args.model,
    }
    if args.rows is not None:
        if args.rows < 500:
            raise ConfigError(f"--rows {args.rows}: expected at least 500 training rows")
        changes["rows"] = args.rows
    options = DemoOptions.fast(**changes) if args.fast else DemoOptions(**changes)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_demo(settings, options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    home = f" --home {args.home}" if args.home else ""
    print(f"\nreport:   {result.report}")
    print(f"timeline: {result.timeline_path}")
    print(
        f"what happened: kfloop{home} registry list --model {result.model}; kfloop{home} report --model {result.model}"
    )
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt

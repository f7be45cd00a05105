"""``kfloop monitor compile|run|submit|schedule [list|delete]``: the scheduled monitoring job
(``pipelines/monitoring.py``, ``kfloop.steps.monitor``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kfloop.cli.main import print_json
from kfloop.cli.pipeline import add_schedule_options, add_submit_flags, kfp_host, report_schedule
from kfloop.config import Settings
from kfloop.errors import ConfigError, KfloopError

DESCRIPTION = """Check a model's captured traffic (every replica's and batch job's captures) over a time range,
window by window, with every monitoring check: feature drift against the version's baseline, quality on
the labels that arrived, the label-free estimated accuracy (and the checks added to
kfloop.monitoring.job.CHECKS). A version with fewer rows than a window is pooled over the whole range
(monitor low-traffic models over a longer --since). Writes the report as Markdown and HTML (KFP
artifacts) and emits every alert as the CloudEvent the live path emits, to --sink-url (default K_SINK),
where the trigger's per-signal policy decides. The model and the range are checked before anything runs."""


def add_commands(groups) -> None:
    monitor = groups.add_parser("monitor", help="scheduled monitoring of captured traffic", description=DESCRIPTION)
    monitor.set_defaults(group_parser=monitor)
    sub = monitor.add_subparsers(title="monitor commands", metavar="COMMAND")

    compile_ = sub.add_parser(
        "compile", help="compile the monitoring pipeline to YAML (default pipelines/monitoring.yaml)"
    )
    compile_.add_argument("-o", "--output", type=Path, help="where to write the YAML")
    compile_.add_argument("--image", help="container image of the component (env KFLOOP_IMAGE)")
    compile_.set_defaults(handler=compile_command)

    for name, handler, text in (
        ("run", run_command, "run the monitoring pipeline on this machine (kfp.local)"),
        ("submit", submit_command, "submit the monitoring pipeline to a Kubeflow Pipelines API"),
        ("schedule", schedule_command, "monitor on a calendar: a KFP recurring run (--cron or --every); list, delete"),
    ):
        cmd = sub.add_parser(name, help=text, description=DESCRIPTION)
        _add_job_flags(cmd, required=name != "schedule")
        cmd.set_defaults(handler=handler)
    run = sub.choices["run"]
    run.add_argument("--report", type=Path, help="also copy the HTML report here")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_submit_flags(sub.choices["submit"], "kfloop-monitor-<model>-<time>")
    sub.choices["submit"].add_argument("--json", action="store_true", help="print the result as JSON")
    _add_schedule_flags(sub.choices["schedule"])


def _add_job_flags(cmd, required: bool) -> None:
    # not required on 'schedule': it would also be required before 'schedule list|delete' (checked there)
    cmd.add_argument("--model", required=required, help="registered model name")
    cmd.add_argument(
        "--since",
        default="1d",
        help="start of the range: a time (2026-05-01T00:00:00Z) or a duration back (7d; default 1d)",
    )
    cmd.add_argument("--until", default="", help="end of the range: a time or a duration back (default: now)")
    cmd.add_argument("--window-rows", type=int, default=500, help="rows per window (default 500, as the live window)")
    cmd.add_argument(
        "--min-rows", type=int, default=50, help="fewer rows in a window: too few for a verdict (default 50)"
    )
    cmd.add_argument("--min-labels", type=int, default=30, help="labeled rows a quality verdict needs (default 30)")
    cmd.add_argument("--quality-metric", default="", help="labeled metric (default accuracy, rmse for regression)")
    cmd.add_argument(
        "--quality-threshold", type=float, default=-1.0, help="default: --quality-margin off the version's test metric"
    )
    cmd.add_argument("--quality-margin", type=float, default=0.1, help="fraction off the test metric (default 0.1)")
    cmd.add_argument(
        "--estimated-threshold",
        type=float,
        default=-1.0,
        help="estimated accuracy that alerts (default: --quality-margin off the version's test accuracy)",
    )
    cmd.add_argument("--no-events", action="store_true", help="write the report only; emit no CloudEvents")
    cmd.add_argument(
        "--sink-url", default="", help="where the events go (default K_SINK; else they stay in the outbox)"
    )
    cmd.add_argument("--pipeline", type=Path, help="compiled pipeline YAML (default: the packaged monitoring.yaml)")


def _add_schedule_flags(schedule) -> None:
    schedule.description = (
        DESCRIPTION + "\n\nschedule: a KFP recurring run of the monitoring pipeline, or list/delete them. --cron takes "
        "5 fields (MIN HOUR DOM MON DOW), KFP's 6 or @hourly/@daily/...; --every a duration such as 6h (at least "
        "60s). Give --since the schedule's period (e.g. --every 1d --since 1d) to check each row once."
    )
    add_schedule_options(schedule, "kfloop-<model>-monitoring", "monitor schedule list")


def compile_command(args, settings: Settings) -> int:
    from kfloop.pipelines.monitoring import YAML_PATH, compile_pipeline

    path = compile_pipeline(args.output or YAML_PATH, image=args.image or settings.image)
    print(f"compiled {path}")
    return 0


def _yaml_path(args) -> Path:
    from kfloop.pipelines.monitoring import YAML_PATH

    path = args.pipeline or YAML_PATH
    if not path.is_file():
        raise ConfigError(f"compiled pipeline {path} not found; run 'kfloop monitor compile' first")
    return path


def prepare(args, settings: Settings, check_registry: bool = True) -> dict:
    """Pipeline arguments, after refusing a bad model name, range or option (and, for a run on this
    machine's store, a model with no registered version)."""
    from kfloop.steps.monitor import MonitorOptions, resolve_range

    if not args.model:
        raise ConfigError("--model is required: the registered model to monitor")
    options = MonitorOptions(
        args.model, args.since, args.until, args.window_rows, args.min_rows, args.min_labels, args.quality_metric,
        args.quality_threshold, args.quality_margin, args.estimated_threshold, not args.no_events, args.sink_url,
    )  # fmt: skip
    options.check()
    resolve_range(options.since, options.until)
    if check_registry:
        from kfloop.errors import ModelNotFound
        from kfloop.store.objects import open_store
        from kfloop.store.registry import Registry

        if not Registry(open_store(settings)).version_numbers(options.model):
            raise ModelNotFound(f"model {options.model!r} has no registered version: nothing to monitor against")
    return {
        "model": options.model,
        "since": options.since,
        "until": options.until,
        "window_rows": options.window_rows,
        "min_rows": options.min_rows,
        "min_labels": options.min_labels,
        "quality_metric": options.quality_metric,
        "quality_threshold": options.quality_threshold,
        "quality_margin": options.quality_margin,
        "estimated_threshold": options.estimated_threshold,
        "emit": options.emit,
        "sink_url": options.sink_url,
    }


def run_command(args, settings: Settings) -> int:
    from kfloop.pipelines.monitoring import TASK_NAME
    from kfloop.pipelines.run_local import run_local

    yaml_path = _yaml_path(args)
    arguments = prepare(args, settings)
    print(f"running {yaml_path.name} locally: {arguments['model']} since {arguments['since']}", file=sys.stderr)
    result = run_local(settings, arguments, yaml_path, progress=lambda line: print(line, file=sys.stderr))
    task_dir = result.run_dir / TASK_NAME if result.run_dir else None
    summary_path = task_dir / "summary" if task_dir else None
    if not (summary_path and summary_path.is_file()):
        raise KfloopError(f"the monitor step wrote no summary (log {result.log_path})")
    summary = json.loads(summary_path.read_text())
    html_path = task_dir / "report_html"
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(html_path.read_text(encoding="utf-8"), encoding="utf-8")
    if args.json:
        print_json({**summary, "run_dir": str(result.run_dir), "log_path": str(result.log_path)})
        return 0
    counts = summary["counts"]
    print(f"{summary['model']}: {len(summary['windows'])} windows from {summary['since']} to {summary['until']}")
    for signal, by_status in counts.items():
        alerting, ok, few = by_status["alert"], by_status["ok"], by_status["insufficient"]
        print(f"  {signal:<20} {alerting} alerting, {ok} ok, {few} too few rows")
    events = summary["events"]
    where = events.get("sink") or "the outbox (no sink)"
    print(
        f"events: {events['emitted']} emitted, {events['delivered']} delivered to {where}, {events['pending']} pending"
    )
    print(f"report: {args.report or html_path} (Markdown: {task_dir / 'report'})")
    print(f"outputs: {result.run_dir}  (log {result.log_path.name}, {result.seconds:.1f}s)")
    return 0


def submit_command(args, settings: Settings) -> int:
    from kfloop.cli.pipeline import submit_and_report

    yaml_path = _yaml_path(args)
    arguments = prepare(args, settings, check_registry=False)  # the cluster's registry is not this machine's
    run_name = args.run_name or f"kfloop-monitor-{arguments['model']}-{time.strftime('%Y%m%d-%H%M%S')}"
    return submit_and_report(args, yaml_path, arguments, run_name)


def schedule_command(args, settings: Settings) -> int:
    from kfloop.pipelines.schedule import create_schedule

    if args.cron is None and args.every is None:
        raise ConfigError("monitor schedule needs --cron EXPR or --every DURATION (or the command list or delete)")
    host = kfp_host(args)
    yaml_path = _yaml_path(args)
    arguments = prepare(args, settings, check_registry=False)
    result = create_schedule(
        host,
        yaml_path,
        arguments,
        cron=args.cron,
        every=args.every,
        experiment=args.experiment,
        name=args.name or f"kfloop-{arguments['model']}-monitoring",
        namespace=args.namespace,
        max_concurrency=args.max_concurrency,
        catchup=args.catchup,
        progress=lambda line: print(line, file=sys.stderr),
        description="kfloop scheduled monitoring",
    )
    return report_schedule(args, result)

"""``kfloop pipeline compile|run|submit|schedule [list|delete]``."""

from __future__ import annotations

import sys
from pathlib import Path

from kfloop.cli.main import print_json
from kfloop.config import Settings
from kfloop.errors import ConfigError, KfloopError
from kfloop.pipelines.parameters import parameter_types, parse_params
from kfloop.training.sample_defaults import SAMPLE_DEFAULTS


def add_commands(groups) -> None:
    pipeline = groups.add_parser("pipeline", help="compile, run locally, or submit the training pipeline")
    pipeline.set_defaults(group_parser=pipeline)
    sub = pipeline.add_subparsers(title="pipeline commands", metavar="COMMAND")

    compile_ = sub.add_parser("compile", help="compile the pipeline to YAML (default pipelines/training.yaml)")
    compile_.add_argument("-o", "--output", type=Path, help="where to write the YAML")
    compile_.add_argument("--image", help="container image of the components (env KFLOOP_IMAGE)")
    compile_.set_defaults(handler=compile_command)

    for name, handler, text in (
        ("run", run_command, "run the compiled pipeline on this machine (kfp.local)"),
        ("submit", submit_command, "submit the compiled pipeline to a Kubeflow Pipelines API"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--data", help="source: a CSV/Parquet path, s3://bucket/key, or sample:churn|breast_cancer")
        cmd.add_argument("--target", help="target column (default: the sample's target, else 'churn')")
        cmd.add_argument("--model-name", help="registered model name (default churn)")
        cmd.add_argument("--param", action="append", metavar="KEY=VALUE", help="any pipeline parameter (repeatable)")
        cmd.add_argument("--pipeline", type=Path, help="compiled pipeline YAML (default: the packaged training.yaml)")
        cmd.add_argument("--json", action="store_true", help="print the result as JSON")
        cmd.set_defaults(handler=handler)
    add_submit_flags(sub.choices["submit"], "kfloop-<model>-<time>")
    _add_schedule_commands(sub)


def add_submit_flags(submit, default_run_name: str) -> None:
    """The flags of a KFP run submission (``pipeline submit``, ``batch submit``; see ``submit_and_report``)."""
    submit.add_argument("--host", required=True, help="Kubeflow Pipelines API URL, e.g. http://localhost:8888")
    submit.add_argument("--experiment", default="kfloop", help="experiment name (default kfloop)")
    submit.add_argument("--run-name", help=f"run name (default: {default_run_name})")
    submit.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    submit.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeded")
    submit.add_argument("--timeout", type=int, default=3600, help="seconds to wait with --wait (default 3600)")
    submit.add_argument(
        "--poll-seconds", type=float, default=5.0, help="seconds between run state checks with --wait (default 5)"
    )


def add_kfp_flags(cmd) -> None:
    # --host is checked by the handlers: a required flag here would also be required before 'list'/'delete'
    cmd.add_argument("--host", help="Kubeflow Pipelines API URL, e.g. http://localhost:8888 (required)")
    cmd.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    cmd.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_schedule_commands(sub) -> None:
    schedule = sub.add_parser(
        "schedule",
        help="retrain on a calendar: a KFP recurring run of the pipeline (--cron or --every); list, delete",
        description="Create a KFP recurring run of the compiled training pipeline, or list/delete them. "
        "--cron takes 5 fields (MIN HOUR DOM MON DOW), KFP's 6 (SEC first) or @hourly/@daily/@weekly/"
        "@monthly/@yearly; --every a duration such as 30m, 6h, 1d, 1h30m (at least 60s). Both are checked "
        "before any call to the API.",
    )
    schedule.add_argument("--data", help="source: a CSV/Parquet path, s3://bucket/key, or sample:churn|breast_cancer")
    schedule.add_argument("--target", help="target column (default: the sample's target, else 'churn')")
    schedule.add_argument("--model-name", help="registered model name (default churn)")
    schedule.add_argument("--param", action="append", metavar="KEY=VALUE", help="any pipeline parameter (repeatable)")
    schedule.add_argument("--pipeline", type=Path, help="compiled pipeline YAML (default: the packaged training.yaml)")
    add_schedule_options(schedule, "kfloop-<model>-retraining", "pipeline schedule list")
    schedule.set_defaults(handler=schedule_command)


def add_schedule_options(schedule, default_name: str, list_command: str) -> None:
    """What every ``... schedule`` command takes (``pipeline schedule``, ``monitor schedule``): when it runs,
    the recurring run's experiment, name and concurrency, the KFP flags, and its ``list`` and ``delete``
    commands."""
    when = schedule.add_mutually_exclusive_group()
    when.add_argument("--cron", metavar="EXPR", help="cron expression, e.g. '0 3 * * *' (03:00 every day, UTC)")
    when.add_argument("--every", metavar="DURATION", help="interval between runs, e.g. 6h, 1d, 1h30m")
    schedule.add_argument("--experiment", default="kfloop", help="experiment name (default kfloop)")
    schedule.add_argument("--name", help=f"recurring run name (default {default_name})")
    schedule.add_argument(
        "--max-concurrency", type=int, default=1, help="runs of the schedule at once at most (default 1)"
    )
    schedule.add_argument(
        "--catchup", action="store_true", help="after a pause, start every missed run (default: only the latest)"
    )
    add_kfp_flags(schedule)
    schedule.set_defaults(schedule_parser=schedule)
    actions = schedule.add_subparsers(title="schedule commands", metavar="COMMAND")
    list_ = actions.add_parser("list", help="list the recurring runs on the KFP API")
    list_.add_argument("--experiment", help="only those of this experiment")
    add_kfp_flags(list_)
    list_.set_defaults(handler=schedule_list_command)
    delete = actions.add_parser("delete", help="delete a recurring run by id (its past runs stay)")
    delete.add_argument("id", help=f"recurring run id, as '{list_command}' prints it")
    add_kfp_flags(delete)
    delete.set_defaults(handler=schedule_delete_command)


def compile_command(args, settings: Settings) -> int:
    from kfloop.pipelines.training import YAML_PATH, compile_pipeline

    path = compile_pipeline(args.output or YAML_PATH, image=args.image or settings.image)
    print(f"compiled {path}")
    return 0


def pipeline_arguments(args, yaml_path: Path) -> dict:
    """Pipeline arguments from the flags, typed by the YAML's parameter definitions."""
    arguments = parse_params(args.param, parameter_types(yaml_path))
    if args.data:
        arguments["source"] = args.data
    source = arguments.get("source", "sample:churn")
    sample = source[len("sample:") :].split("?")[0] if source.startswith("sample:") else None
    defaults = SAMPLE_DEFAULTS.get(sample or "", {})
    if args.target:
        arguments["target"] = args.target
    elif defaults and "target" not in arguments:
        arguments["target"] = defaults["target"]
    if defaults and "sensitive_feature" not in arguments and arguments.get("target") == defaults["target"]:
        arguments["sensitive_feature"] = defaults["sensitive_feature"]
    if args.model_name:
        arguments["model_name"] = args.model_name
    if "model_name" in arguments:  # refused here, before any step runs, not in the register step
        from kfloop.names import validate_model_name

        validate_model_name(arguments["model_name"])
    if "threshold" in arguments:  # refused here, before anything runs, not in the evaluate step
        from kfloop.training.evaluate import check_threshold

        check_threshold(arguments["threshold"])
    return arguments


def _yaml_path(args) -> Path:
    from kfloop.pipelines.training import YAML_PATH

    path = args.pipeline or YAML_PATH
    if not path.is_file():
        raise ConfigError(f"compiled pipeline {path} not found; run 'kfloop pipeline compile' first")
    return path


def run_command(args, settings: Settings) -> int:
    from kfloop.pipelines.run_local import run_local

    yaml_path = _yaml_path(args)
    arguments = pipeline_arguments(args, yaml_path)
    print(f"running {yaml_path.name} locally with {_show(arguments)}", file=sys.stderr)
    result = run_local(settings, arguments, yaml_path, progress=lambda line: print(line, file=sys.stderr))
    if args.json:
        print_json(result.to_dict())
        return 0
    gate = result.gate
    print(f"gate: {'passed' if gate.get('passed') else 'failed'}: {gate.get('reason', '')}")
    print(f"registered: {result.registered}" if result.registered else "registered: nothing (the gate failed)")
    print(f"outputs: {result.run_dir}  (log {result.log_path.name}, {result.seconds:.1f}s)")
    return 0


def submit_command(args, settings: Settings) -> int:
    yaml_path = _yaml_path(args)
    return submit_and_report(args, yaml_path, pipeline_arguments(args, yaml_path), args.run_name)


def submit_and_report(args, yaml_path: Path, arguments: dict, run_name: str | None) -> int:
    """Submit a compiled pipeline with the flags ``pipeline submit`` and ``batch submit`` share, print
    the run (``--json``: as JSON), and with ``--wait`` fail unless it succeeded."""
    from kfloop.pipelines.submit import submit_run

    result = submit_run(
        args.host,
        yaml_path,
        arguments,
        experiment=args.experiment,
        run_name=run_name,
        namespace=args.namespace,
        wait=args.wait,
        timeout=args.timeout,
        poll_seconds=args.poll_seconds,
        progress=lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        print_json(result)
    else:
        print(f"run {result['run_id']} ({result['run_name']}): {result['state']}")
    if args.wait and result["state"] != "SUCCEEDED":
        raise KfloopError(f"run {result['run_id']} finished in state {result['state']}")
    return 0


def kfp_host(args) -> str:
    if not args.host:
        raise ConfigError("--host is required: the Kubeflow Pipelines API URL, e.g. http://localhost:8888")
    return args.host


def schedule_command(args, settings: Settings) -> int:
    from kfloop.pipelines.schedule import create_schedule

    if args.cron is None and args.every is None:
        raise ConfigError("pipeline schedule needs --cron EXPR or --every DURATION (or the command list or delete)")
    host = kfp_host(args)
    yaml_path = _yaml_path(args)
    arguments = pipeline_arguments(args, yaml_path)
    result = create_schedule(
        host,
        yaml_path,
        arguments,
        cron=args.cron,
        every=args.every,
        experiment=args.experiment,
        name=args.name,
        namespace=args.namespace,
        max_concurrency=args.max_concurrency,
        catchup=args.catchup,
        progress=lambda line: print(line, file=sys.stderr),
    )
    return report_schedule(args, result)


def report_schedule(args, result: dict) -> int:
    """A created recurring run, as JSON (``--json``) or one line."""
    if args.json:
        print_json(result)
    else:
        print(f"recurring run {result['id']} ({result['name']}): {result['schedule']}, {result['status']}")
    return 0


def schedule_list_command(args, settings: Settings) -> int:
    from kfloop.pipelines.schedule import list_schedules

    jobs = list_schedules(
        args.host, args.experiment, args.namespace, progress=lambda line: print(line, file=sys.stderr)
    )
    if args.json:
        print_json(jobs)
        return 0
    if not jobs:
        print("no recurring runs")
        return 0
    print(f"{'ID':<38} {'NAME':<32} {'STATUS':<9} SCHEDULE")
    for job in jobs:
        print(f"{job['id']:<38} {job['name']:<32} {job['status'] or '-':<9} {job['schedule']}")
    return 0


def schedule_delete_command(args, settings: Settings) -> int:
    from kfloop.pipelines.schedule import delete_schedule

    delete_schedule(kfp_host(args), args.id, args.namespace, progress=lambda line: print(line, file=sys.stderr))
    if args.json:
        print_json({"id": args.id, "deleted": True})
    else:
        print(f"recurring run {args.id} deleted")
    return 0


def _show(arguments: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(arguments.items())) or "defaults"

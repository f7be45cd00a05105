"""``kfloop batch compile|run|submit``: batch inference with a registered version (``kfloop.batch``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kfloop.cli.main import print_json
from kfloop.cli.pipeline import add_submit_flags
from kfloop.config import Settings
from kfloop.errors import ConfigError, KfloopError

DESCRIPTION = """Predict a CSV/Parquet file (a local path or s3://BUCKET/KEY) with a registered version, chunk by
chunk: predictions with the input's id column (--id-column) or the row number and each row's capture id
(request_id, for feedback labels); rows that cannot be predicted go to the rejects file (default
<output>.rejects.csv) with the reason; predicted rows are captured like served ones (revision "batch")
and every chunk is checked for drift. The output format follows the suffix (.csv, .parquet, .pq).
Outputs appear only when the job succeeds. The model reference and the input's columns are checked
before anything runs."""


def add_commands(groups) -> None:
    batch = groups.add_parser(
        "batch", help="batch inference: predict a file with a registered version", description=DESCRIPTION
    )
    batch.set_defaults(group_parser=batch)
    sub = batch.add_subparsers(title="batch commands", metavar="COMMAND")

    compile_ = sub.add_parser("compile", help="compile the batch pipeline to YAML (default pipelines/batch.yaml)")
    compile_.add_argument("-o", "--output", type=Path, help="where to write the YAML")
    compile_.add_argument("--image", help="container image of the component (env KFLOOP_IMAGE)")
    compile_.set_defaults(handler=compile_command)

    for name, handler, text in (
        ("run", run_command, "run the batch pipeline on this machine (kfp.local)"),
        ("submit", submit_command, "submit the batch pipeline to a Kubeflow Pipelines API"),
    ):
        cmd = sub.add_parser(name, help=text, description=DESCRIPTION)
        cmd.add_argument("--model", required=True, help="NAME, NAME:VERSION or NAME@STAGE (resolved before the run)")
        cmd.add_argument("--input", required=True, help="CSV/Parquet to predict: a path, file:// or s3://BUCKET/KEY")
        cmd.add_argument("--output", required=True, help="predictions file (.csv/.parquet): a path or s3://BUCKET/KEY")
        cmd.add_argument("--rejects", help="rejected rows with their reasons (default <output>.rejects.csv)")
        cmd.add_argument("--id-column", default="", help="input column copied to the predictions (default: row)")
        cmd.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk (default 100000)")
        cmd.add_argument("--no-capture", action="store_true", help="do not write capture records")
        cmd.add_argument("--no-drift", action="store_true", help="do not check the chunks for drift")
        cmd.add_argument("--pipeline", type=Path, help="compiled pipeline YAML (default: the packaged batch.yaml)")
        cmd.add_argument("--json", action="store_true", help="print the result as JSON")
        cmd.set_defaults(handler=handler)
    add_submit_flags(sub.choices["submit"], "kfloop-batch-<model>-<time>")


def compile_command(args, settings: Settings) -> int:
    from kfloop.pipelines.batch import YAML_PATH, compile_pipeline

    path = compile_pipeline(args.output or YAML_PATH, image=args.image or settings.image)
    print(f"compiled {path}")
    return 0


def _yaml_path(args) -> Path:
    from kfloop.pipelines.batch import YAML_PATH

    path = args.pipeline or YAML_PATH
    if not path.is_file():
        raise ConfigError(f"compiled pipeline {path} not found; run 'kfloop batch compile' first")
    return path


def _location(text: str, local: bool) -> str:
    """Local paths made absolute (the step runs in another process and folder); URIs as given."""
    text = text.strip()
    if "://" in text or not text:
        return text
    return str(Path(text).expanduser().resolve()) if local else text


def prepare(args, settings: Settings, local: bool) -> dict:
    """Pipeline arguments, after refusing an unknown model reference and (for a local input) an input
    that lacks feature columns."""
    from kfloop.batch.job import BatchOptions, check_input, resolve_model

    record = resolve_model(settings, args.model)
    options = BatchOptions(
        record.ref,
        _location(args.input, local),
        _location(args.output, local),
        _location(args.rejects or "", local),
        args.id_column,
        chunk_rows=args.chunk_rows,
        capture=not args.no_capture,
        drift=not args.no_drift,
    )
    options.check()
    if not options.input.startswith("s3://"):  # an S3 input is checked by the step, before it predicts
        from kfloop.schema import FeatureSchema

        check_input(options, settings, FeatureSchema.from_dict(record.schema))
    return {
        "model": options.model,
        "input_uri": options.input,
        "output_uri": options.output,
        "rejects_uri": options.rejects,
        "id_column": options.id_column,
        "chunk_rows": options.chunk_rows,
        "capture": options.capture,
        "drift": options.drift,
    }


def run_command(args, settings: Settings) -> int:
    from kfloop.pipelines.batch import TASK_NAME
    from kfloop.pipelines.run_local import run_local

    yaml_path = _yaml_path(args)
    arguments = prepare(args, settings, local=True)
    print(f"running {yaml_path.name} locally: {arguments['model']} on {arguments['input_uri']}", file=sys.stderr)
    result = run_local(settings, arguments, yaml_path, progress=lambda line: print(line, file=sys.stderr))
    summary_path = result.run_dir / TASK_NAME / "summary" if result.run_dir else None
    if not (summary_path and summary_path.is_file()):
        raise KfloopError(f"the batch step wrote no summary (log {result.log_path})")
    summary = json.loads(summary_path.read_text())
    if args.json:
        print_json({**summary, "run_dir": str(result.run_dir), "log_path": str(result.log_path)})
        return 0
    drift = summary["drift"]
    print(
        f"{summary['model']}: {summary['predicted']} of {summary['rows']} rows predicted, "
        f"{summary['rejected']} rejected, {summary['captured']} captured; drift in {drift['chunks_drifted']} "
        f"of {drift['chunks_checked']} chunks checked"
    )
    print(f"predictions: {summary['output']}")
    print(f"rejects: {summary['rejects_output']}")
    print(f"outputs: {result.run_dir}  (log {result.log_path.name}, {result.seconds:.1f}s)")
    return 0


def submit_command(args, settings: Settings) -> int:
    from kfloop.cli.pipeline import submit_and_report

    yaml_path = _yaml_path(args)
    arguments = prepare(args, settings, local=False)
    name = arguments["model"].split(":")[0]
    run_name = args.run_name or f"kfloop-batch-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return submit_and_report(args, yaml_path, arguments, run_name)

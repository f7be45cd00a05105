"""The ``kfloop`` command line: thin glue over the core, the pipeline runner and the servers.

Settings come from ``KFLOOP_*`` environment variables; the global flags override them.
Expected failures (``KfloopError``) print one line to stderr and exit with status 1;
a usage error exits with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kfloop import __version__
from kfloop.config import Settings
from kfloop.errors import KfloopError

log = logging.getLogger("kfloop")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):  # no command, or a group without its subcommand
        getattr(args, "group_parser", parser).print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING if not args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # urllib3 under kfp.Client warns on each retry (kfp resets the "urllib3" level)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        settings = Settings.from_env().replace(home=args.home, s3_endpoint=args.s3_endpoint, s3_bucket=args.s3_bucket)
        return args.handler(args, settings) or 0
    except KfloopError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfloop", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kfloop {__version__}")
    parser.add_argument("--home", type=Path, help="local state folder (env KFLOOP_HOME, default ./.kfloop)")
    parser.add_argument(
        "--s3-endpoint", help="S3/MinIO endpoint host:port; stores state there (env KFLOOP_S3_ENDPOINT)"
    )
    parser.add_argument("--s3-bucket", help="bucket for registry and captures (env KFLOOP_S3_BUCKET, default kfloop)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    groups = parser.add_subparsers(title="commands", metavar="COMMAND")
    from kfloop.cli import batch as cli_batch
    from kfloop.cli import demo as cli_demo
    from kfloop.cli import monitor as cli_monitor
    from kfloop.cli import pipeline as cli_pipeline
    from kfloop.cli import registry as cli_registry
    from kfloop.cli import report as cli_report
    from kfloop.cli import rollout as cli_rollout
    from kfloop.cli import serve as cli_serve

    cli_demo.add_commands(groups)
    cli_pipeline.add_commands(groups)
    cli_batch.add_commands(groups)
    cli_monitor.add_commands(groups)
    cli_registry.add_commands(groups)
    cli_report.add_commands(groups)
    cli_serve.add_commands(groups)
    cli_rollout.add_commands(groups)
    return parser


def print_json(doc) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))

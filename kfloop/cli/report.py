"""``kfloop report [--model NAME] [-o PATH]``: write the monitoring report as one HTML file.

Without ``--model`` the report covers every model in the store (an empty store gives a short
page saying nothing was recorded). A ``--model`` with nothing recorded (no versions, captures
or events) is an error, since it is most likely a misspelt name: exit 1, no file written.
"""

from __future__ import annotations

from pathlib import Path

from kfloop.config import Settings
from kfloop.store.objects import open_store

DEFAULT_PATH = Path("kfloop-report.html")


def add_commands(groups) -> None:
    report = groups.add_parser("report", help="write the monitoring report (one self-contained HTML file)")
    report.add_argument("--model", help="only this model (default: every model in the store)")
    report.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_PATH, help=f"where to write the HTML (default ./{DEFAULT_PATH})"
    )
    report.set_defaults(handler=report_command)


def report_command(args, settings: Settings) -> int:
    from kfloop.report.page import write_report  # matplotlib loads only for this command

    path = write_report(open_store(settings), args.model, args.output)
    print(path)
    return 0

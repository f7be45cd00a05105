"""What the CLI tests share: every command path of ``kfloop`` and its parser."""

from __future__ import annotations

import argparse

from kfloop.cli.main import build_parser


def command_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command of the parser, depth first, with its own parser."""
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += command_paths(sub, prefix + (name,))
    return found


COMMANDS = {path: p for path, p in command_paths(build_parser())}

"""``kfloop --help`` and every command's ``--help`` import nothing heavy: the CLI starts fast.

A child process (a fresh interpreter, as the ``kfloop`` entry point gets) builds the full parser,
prints every command's help through ``main``, and reports which heavy top-level packages are then in
``sys.modules``. Commands import those inside their functions, when they run. Time is not asserted
here (the machine is shared); ``benchmarks/cli_startup.py`` measures it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.cli.conftest import COMMANDS

HEAVY = (
    "pandas",
    "sklearn",
    "xgboost",
    "numpy",
    "scipy",
    "kfp",
    "kserve",
    "alibi_detect",
    "matplotlib",
    "httpx",
    "kubernetes",
    "pyarrow",
)

PROBE = """
import argparse, contextlib, io, json, sys

from kfloop.cli.main import build_parser, main


def command_paths(parser, prefix=()):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, prefix + (name,))


helps = {}
for path in command_paths(build_parser()):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*path, "--help"])
    helps[" ".join(path)] = out.getvalue()
for module in sys.argv[2:]:  # the control case imports one more module here
    __import__(module)
heavy = set(json.loads(sys.argv[1]))
print(json.dumps({"helps": helps, "heavy": sorted({name.split(".")[0] for name in sys.modules} & heavy)}))
"""


def probe(*extra_imports: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *extra_imports],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_help_imports_nothing_heavy():
    result = probe()
    assert set(result["helps"]) == {" ".join(path) for path in COMMANDS}
    for path, text in result["helps"].items():
        assert text.startswith(f"usage: {' '.join(('kfloop', *path.split()))}"), path
    assert result["heavy"] == []


def test_the_probe_sees_a_heavy_import():
    """The control: the same probe, plus the canary analysis (numpy, pandas, scikit-learn), reports them."""
    result = probe("kfloop.rollout.analysis")
    assert {"numpy", "pandas", "sklearn"} <= set(result["heavy"])

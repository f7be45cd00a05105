"""Settings are read from the environment in one place (kfloop.config): no other module of the package
reads a variable. Passing the environment on to a child process (``{**os.environ, ...}``) is not
reading it, and kfp.local's run (pipelines/run_local.py) sets variables for the steps it runs."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGE_FOLDERS = ("kfloop", "components", "pipelines", "serving")
ALLOWED = {
    "kfloop/config.py",
    "pipelines/run_local.py",  # sets the storage variables for the steps it runs, and restores them
}


def environment_reads(path) -> list[int]:
    """Line numbers of ``os.environ.get(...)``, ``os.environ[...]`` loads, ``os.getenv(...)`` and
    ``os.environ`` as a parameter's default (a function that reads it later)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.arguments):
            defaults = [*node.defaults, *(d for d in node.kw_defaults if d is not None)]
            lines += [d.lineno for d in defaults if ast.unparse(d) in ("os.environ", "environ")]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if ast.unparse(node.value) in ("os.environ", "environ"):
                lines.append(node.lineno)
    return lines


def test_only_config_reads_the_environment():
    found = {}
    for folder in PACKAGE_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel not in ALLOWED and (lines := environment_reads(path)):
                found[rel] = lines
    assert found == {}, f"read the environment through kfloop.config.Settings instead: {found}"


def test_the_check_finds_a_read(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text(
        "import os\nx = os.environ.get('KFLOOP_X')\ny = os.environ['HOME']\nz = {**os.environ}\n"
        "def f(env=os.environ):\n    return env\n"
    )
    assert sorted(environment_reads(sample)) == [2, 3, 5]

"""The wheel that `pip install .` builds (the cluster image installs it) holds every package."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

TOP_LEVEL = {
    "kfloop": "kfloop",
    "components": "kfloop/components",
    "pipelines": "kfloop/pipelines",
    "serving": "kfloop/serving",
}


def test_the_wheel_contains_every_module_and_the_compiled_pipeline(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("kfloop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, installed in TOP_LEVEL.items():
        for module in (REPO / folder).rglob("*.py"):
            relative = module.relative_to(REPO / folder).as_posix()
            assert f"{installed}/{relative}" in names, f"{folder}/{relative} is not installed"
    assert "kfloop/pipelines/training.yaml" in names


def test_every_package_is_declared_in_pyproject():
    """setuptools still copies an undeclared subpackage, but only as deprecated 'data': declare them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    for folder, installed in TOP_LEVEL.items():
        for init in (REPO / folder).rglob("__init__.py"):
            package = (installed + "/" + init.parent.relative_to(REPO / folder).as_posix()).strip("/.")
            assert package.replace("/", ".") in declared, f"{init.parent} is not in pyproject's packages"


def test_test_modules_have_unique_names():
    """Tests mirror the packages, and no two test files share a name (a failure names the module
    without its folder, and pytest's rootdir-relative ids stay unambiguous)."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []

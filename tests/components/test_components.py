"""Components are thin wrappers over kfloop.steps, and the image they run on installs the project."""

from __future__ import annotations

import ast
import inspect
import re

import pytest

from kfloop.components import STEPS, build_components
from tests.conftest import REPO

DOCKERFILE = REPO / "components" / "Dockerfile"


@pytest.mark.parametrize("fn", STEPS, ids=lambda f: f.__name__)
def test_each_component_body_is_thin_glue_over_kfloop(fn):
    source = inspect.getsource(fn)
    body = ast.parse(source).body[0].body
    statements = [s for s in body if not isinstance(s, ast.Expr)]  # docstrings aside
    assert len(statements) <= 15
    modules = {s.module for s in ast.walk(ast.parse(source)) if isinstance(s, ast.ImportFrom)}
    assert any(m.startswith("kfloop") for m in modules if m), f"{fn.__name__} does not call into kfloop"


def test_components_use_the_requested_image_and_do_not_pip_install():
    built = build_components("registry.example/kfloop:test")
    for name in ("process", "tune", "train", "evaluate", "analyze", "baseline", "register", "deploy"):
        container = getattr(built, name).component_spec.implementation.container
        assert container.image == "registry.example/kfloop:test"
        assert "pip install" not in " ".join(container.command)


def test_dockerfile_installs_the_project_and_runs_as_the_manifests_user():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    for source in re.findall(r"^COPY (?!--from=)(.+?) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"
    package_dirs = {"kfloop", "components", "pipelines", "serving"}
    copied = {p for line in re.findall(r"^COPY (?!--from=)(.+?) \S+$", text, re.M) for p in line.split()}
    assert package_dirs <= copied, "every package-dir of pyproject.toml must be in the image"
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r"^USER 1000", text, re.M)
    manifests = (REPO / "manifests" / "base" / "deployment-trigger.yaml").read_text()
    assert "runAsUser: 1000" in manifests

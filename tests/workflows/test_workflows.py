"""The GitHub Actions workflows parse and have the jobs, matrix and triggers the project relies on
(actionlint is not available here: the structure is checked with PyYAML)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as True; GitHub reads it as "on".
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def run_lines(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses(job: dict) -> list[str]:
    return [step["uses"] for step in job["steps"] if "uses" in step]


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_workflow_parses_with_jobs_and_steps(name):
    doc = load(name)
    assert doc["name"] and doc["on"] and doc["jobs"], name
    for job_name, job in doc["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", f"{name}:{job_name}"
        assert job["steps"] and all("run" in s or "uses" in s for s in job["steps"]), f"{name}:{job_name}"
        for ref in uses(job):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", ref), f"{name}:{job_name}: unpinned action {ref!r}"
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in doc["jobs"], f"{name}:{job_name} needs an unknown job {need!r}"


def test_ci_runs_the_ci_script_on_pull_requests_and_pushes_on_every_declared_python():
    doc = load("ci.yml")
    assert "pull_request" in doc["on"] and "push" in doc["on"]
    (job,) = doc["jobs"].values()
    versions = job["strategy"]["matrix"]["python-version"]
    # (tomllib is 3.11+; the suite runs on 3.10 too)
    requires = re.search(r'^requires-python = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert requires == ">=3.10,<3.13"
    assert versions == ["3.10", "3.11", "3.12"]  # strings: 3.10 as a number would be 3.1
    assert all(isinstance(v, str) for v in versions)
    setup = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup and setup[0]["with"]["python-version"] == "${{ matrix.python-version }}"
    assert re.search(r"^bash \.ci/run$", run_lines(job), re.M)
    assert (REPO / ".ci" / "run").is_file()


def test_image_builds_on_pull_requests_and_publishes_the_default_image_on_tags():
    doc = load("image.yml")
    assert "pull_request" in doc["on"]
    assert doc["on"]["push"]["tags"] == ["v*"] and "branches" not in doc["on"]["push"]
    assert doc["permissions"]["packages"] == "write"
    assert doc["env"]["IMAGE"] == "ghcr.io/kfloop/kfloop"
    (job,) = doc["jobs"].values()
    build = [s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action@")]
    assert len(build) == 1
    assert build[0]["with"]["file"] == "components/Dockerfile" and build[0]["with"]["context"] == "."
    assert build[0]["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/') }}"  # pushed on tags only
    login = [s for s in job["steps"] if s.get("uses", "").startswith("docker/login-action@")]
    assert login and login[0]["if"] == "startsWith(github.ref, 'refs/tags/')"
    assert login[0]["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    meta = [s for s in job["steps"] if s.get("uses", "").startswith("docker/metadata-action@")]
    # A tag v0.1.0 becomes the image tag 0.1.0: ghcr.io/kfloop/kfloop:0.1.0, the default image.
    assert "type=semver,pattern={{version}}" in meta[0]["with"]["tags"]


def test_e2e_kind_runs_the_script_on_pull_requests():
    doc = load("e2e-kind.yml")
    assert "pull_request" in doc["on"]
    (job,) = doc["jobs"].values()
    lines = run_lines(job)
    assert "bash hack/e2e-kind.sh --dry-run" in lines
    assert re.search(r"^bash hack/e2e-kind\.sh( --keep)?$", lines, re.M)
    assert job["timeout-minutes"] <= 120
    script = (REPO / "hack" / "e2e-kind.sh").read_text()
    kind = re.search(r"^KIND_VERSION=\$\{KIND_VERSION:-(\S+)\}", script, re.M).group(1)
    assert doc["env"]["KIND_VERSION"] == kind  # the kind the runner installs is the one the script pins


def test_train_workflow_is_kept():
    doc = load("train.yml")
    assert {"compile", "submit-kfloop", "submit-kfp-cli"} <= set(doc["jobs"])

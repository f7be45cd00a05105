"""Submitting the compiled pipeline to a Kubeflow Pipelines API, against a fake v2beta1 REST server
that answers the calls ``kfp.Client`` (kfp 2.17.0) makes, and the CI workflow example."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kfloop.pipelines.training import YAML_PATH
from tests.conftest import REPO, free_port
from tests.fakes.kfp_api import API, NOW, FakeKfpApi

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

WORKFLOW = REPO / ".github" / "workflows" / "train.yml"


def kfloop(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the CLI as a process; HOME is redirected since kfp.Client writes ~/.config/kfp/."""
    env = {**os.environ, "KFLOOP_HOME": str(home / "kfloop"), "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "kfloop.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def submit(api: FakeKfpApi, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return kfloop("pipeline", "submit", "--host", api.url, "--poll-seconds", "0.05", *extra, home=tmp_path)


def compiled_docs() -> list[dict]:
    return list(yaml.safe_load_all(YAML_PATH.read_text()))


def test_submit_sends_the_compiled_spec_and_parameters_and_waits_for_success(tmp_path):
    package = Path(shutil.copy(YAML_PATH, tmp_path / "training.yaml"))  # a copy: fixed while the test runs
    with FakeKfpApi(run_states=("PENDING", "RUNNING", "RUNNING", "SUCCEEDED")) as api:
        proc = submit(
            api,
            tmp_path,
            "--param",
            "seed=3",
            "--experiment",
            "nightly",
            "--run-name",
            "r1",
            "--pipeline",
            str(package),
            "--wait",
            "--json",
        )
    assert proc.returncode == 0, proc.stderr
    assert api.calls("GET", f"{API}/healthz")
    created = api.calls("POST", f"{API}/experiments")
    assert [c["body"]["display_name"] for c in created] == ["nightly"]
    (post,) = api.calls("POST", f"{API}/runs")
    run = post["body"]
    pipeline_spec, platform_spec = yaml.safe_load_all(package.read_text())
    assert run["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    assert run["runtime_config"]["parameters"] == {"seed": 3, "target": "churn", "sensitive_feature": "age"}
    assert run["experiment_id"] == api.experiments[0]["experiment_id"]
    assert run["display_name"] == "r1"
    run_id = next(iter(api.runs))
    assert len(api.calls("GET", f"{API}/runs/{run_id}")) == 4  # polled until the terminal state
    result = json.loads(proc.stdout)
    assert result == {"run_id": run_id, "run_name": "r1", "state": "SUCCEEDED", "host": api.url}
    assert "RUNNING" in proc.stderr and "SUCCEEDED" in proc.stderr


def test_submit_reuses_an_existing_experiment_and_sends_the_data_source(tmp_path):
    existing = {"experiment_id": "exp-1", "display_name": "kfloop", "created_at": NOW}
    with FakeKfpApi(experiments=[existing]) as api:
        proc = submit(api, tmp_path, "--data", "sample:breast_cancer", "--model-name", "cancer")
    assert proc.returncode == 0, proc.stderr
    assert not api.calls("POST", f"{API}/experiments")
    (post,) = api.calls("POST", f"{API}/runs")
    assert post["body"]["experiment_id"] == "exp-1"
    assert post["body"]["runtime_config"]["parameters"] == {
        "source": "sample:breast_cancer",
        "target": "target",
        "sensitive_feature": "",
        "model_name": "cancer",
    }
    assert not api.calls("GET", f"{API}/runs/{next(iter(api.runs))}")  # no --wait: no polling
    assert "SUBMITTED" in proc.stdout


@pytest.mark.parametrize("final", ["FAILED", "CANCELED"])
def test_submit_wait_fails_when_the_run_does_not_succeed(tmp_path, final):
    with FakeKfpApi(run_states=("RUNNING", final)) as api:
        proc = submit(api, tmp_path, "--wait")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run ") and last.endswith(f"finished in state {final}")


def test_submit_wait_times_out(tmp_path):
    with FakeKfpApi(run_states=("RUNNING",)) as api:
        proc = submit(api, tmp_path, "--wait", "--timeout", "1")
    assert proc.returncode == 1
    assert "did not finish within 1s" in proc.stderr.strip().splitlines()[-1]


def test_unreachable_host_fails_quickly_with_a_clear_error(tmp_path):
    started = time.monotonic()
    proc = kfloop("pipeline", "submit", "--host", f"http://127.0.0.1:{free_port()}", "--wait", home=tmp_path)
    assert time.monotonic() - started < 15
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: Kubeflow Pipelines API at http://127.0.0.1:")
    assert "Connection refused" in proc.stderr


class BrokenKfpApi(FakeKfpApi):
    """Answers every request with HTTP 503, as an API whose backend is down does."""

    def answer(self, method, path, query, body):
        return 503, {"error": "upstream connect error", "code": 14, "message": "unavailable"}


def test_failing_api_is_reported_at_once_not_after_kfp_health_check_retries(tmp_path):
    started = time.monotonic()  # kfp.Client alone retries its health check 5 times, 5 s apart
    with BrokenKfpApi() as api:
        proc = submit(api, tmp_path, "--wait")
    assert time.monotonic() - started < 15
    assert [r["path"] for r in api.requests] == [f"{API}/healthz"]
    assert proc.returncode == 1
    assert (
        proc.stderr == f"error: Kubeflow Pipelines API at {api.url} refused or did not answer: "
        "HTTP 503 Service Unavailable\n"
    )


class VanishingRunApi(FakeKfpApi):
    """Accepts the run, then fails every state query."""

    def answer(self, method, path, query, body):
        if method == "GET" and path.startswith(f"{API}/runs/"):
            return 500, {"error": "database unavailable", "code": 13, "message": "internal"}
        return super().answer(method, path, query, body)


def test_api_failing_while_waiting_gives_a_clear_error(tmp_path):
    with VanishingRunApi() as api:
        proc = submit(api, tmp_path, "--wait")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    run_id = next(iter(api.runs))
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: could not read the state of run {run_id}: HTTP 500 Internal Server Error"
    )


def test_bad_parameter_is_rejected_before_contacting_the_api(tmp_path):
    with FakeKfpApi() as api:
        proc = submit(api, tmp_path, "--param", "seed=x")
    assert proc.returncode == 1 and proc.stderr.startswith("error: --param seed=")
    assert api.requests == []


# -- the GitHub Actions example ----------------------------------------------------------------------


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def run_scripts(job: str | None = None) -> list[str]:
    jobs = workflow()["jobs"]
    return [step["run"] for name, j in jobs.items() if job in (None, name) for step in j["steps"] if "run" in step]


def invocations(program: str) -> list[list[str]]:
    """Every simple command in the workflow's scripts that runs ``program``, as its words."""
    found = []
    for script in run_scripts():
        for line in script.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for word in [*lexer, ";"]:
                if word and set(word) <= set("|&;()<>"):
                    if command and command[0] == program:
                        found.append(command)
                    command = []
                else:
                    command.append(word)
    return found


def click_words(command, words: list[str], stop_at_positional: bool) -> tuple[list[str], list[str]]:
    """Check ``words`` against a click command's options; returns (positionals, the rest)."""
    import click

    options = {name: p for p in command.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}
    positionals, i = [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            name, eq, _ = word.partition("=")
            assert name in options, f"{word!r} is not an option of kfp {command.name}: {sorted(options)}"
            i += 1 if (options[name].is_flag or eq) else 2
        elif stop_at_positional:
            return positionals, words[i:]
        else:
            positionals.append(word)
            i += 1
    return positionals, []


def test_workflow_compiles_checks_the_yaml_and_submits_to_the_secret_host():
    doc = workflow()
    assert set(doc[True]) >= {"workflow_dispatch", "push"}  # YAML 1.1 reads the key `on` as True
    scripts = "\n".join(run_scripts())
    assert "kfloop pipeline compile --output pipelines/training.yaml" in scripts
    assert "git diff --exit-code pipelines/training.yaml" in scripts
    for job in ("submit-kfloop", "submit-kfp-cli"):
        assert doc["jobs"][job]["env"]["KFP_HOST"] == "${{ secrets.KFP_HOST }}"
        assert doc["jobs"][job]["needs"] == "compile"
    assert all("${{" not in s for s in run_scripts()), "pass expressions through env:, not into scripts"


def test_every_kfp_command_in_the_workflow_uses_flags_kfp_defines():
    import click
    from kfp.cli.cli import cli
    from kfp.cli.run import run

    pipeline_parameters = set(compiled_docs()[0]["root"]["inputDefinitions"]["parameters"])
    commands = invocations("kfp")
    assert {c[c.index("run") + 1] for c in commands} == {"create", "get"}
    for words in commands:
        _, rest = click_words(cli, words[1:], stop_at_positional=True)
        assert rest[0] == "run", words
        command = run.get_command(click.Context(run), rest[1])
        args, _ = click_words(command, rest[2:], stop_at_positional=False)
        if command.name == "create":
            assert {"--experiment-name", "--package-file", "--watch"} <= set(rest), words
            keys = [arg.partition("=")[0] for arg in args]
            assert all("=" in arg for arg in args) and set(keys) <= pipeline_parameters, args
            assert "seed" in keys
        else:
            assert len(args) == 1, words  # the run id


def test_every_kfloop_command_in_the_workflow_parses():
    from kfloop.cli.main import build_parser

    commands = invocations("kfloop")
    assert [c[1:3] for c in commands] == [["pipeline", "compile"], ["pipeline", "submit"]]
    pipeline_parameters = set(compiled_docs()[0]["root"]["inputDefinitions"]["parameters"])
    for words in commands:
        args = build_parser().parse_args(words[1:])  # exits (SystemExit) on an unknown flag
        assert {p.partition("=")[0] for p in getattr(args, "param", None) or []} <= pipeline_parameters
    submit_args = build_parser().parse_args(commands[1][1:])
    assert submit_args.wait and submit_args.host == "$KFP_HOST"


def run_job(job: str, api: FakeKfpApi, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Run a job's steps as GitHub would (``bash -e``), skipping installs and actions; stops at
    the first failing step, as the job does."""
    (tmp_path / "compiled").mkdir()
    shutil.copy(YAML_PATH, tmp_path / "compiled" / "training.yaml")  # what download-artifact gives
    env = {
        **os.environ,
        **workflow()["env"],
        "RUN_NAME": "ci-run",
        "SEED": "3",
        "KFP_HOST": api.url,
        "HOME": str(tmp_path),
        "KFLOOP_HOME": str(tmp_path / "kfloop"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    results = []
    for script in run_scripts(job):
        if "pip install" in script:
            continue
        results.append(
            subprocess.run(
                ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )
        )
        if results[-1].returncode:
            break
    return results


@pytest.mark.skipif(not (Path(sys.executable).parent / "kfp").exists(), reason="kfp CLI not installed")
@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED"])
def test_kfp_cli_job_fails_exactly_when_the_run_fails(tmp_path, final):
    with FakeKfpApi(run_states=("RUNNING", final)) as api:
        results = run_job("submit-kfp-cli", api, tmp_path)
    assert len(results) == 2, [(r.returncode, r.stdout, r.stderr) for r in results]
    submitted, checked = results
    assert submitted.returncode == 0, submitted.stderr  # kfp run create --watch: 0 even for FAILED
    assert f"Run is finished with state {final}" in submitted.stdout
    (post,) = api.calls("POST", f"{API}/runs")
    assert post["body"]["runtime_config"]["parameters"] == {
        "seed": 3,
        "source": "sample:churn",
        "target": "churn",
        "sensitive_feature": "age",
    }
    assert post["body"]["display_name"] == "ci-run"
    assert [e["display_name"] for e in api.experiments] == ["kfloop-ci"]
    assert f"finished in state {final}" in checked.stdout, (checked.stdout, checked.stderr)
    assert (checked.returncode == 0) == (final == "SUCCEEDED")


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED"])
def test_kfloop_job_fails_exactly_when_the_run_fails(tmp_path, final):
    with FakeKfpApi(run_states=(final,)) as api:
        (submitted,) = run_job("submit-kfloop", api, tmp_path)
    assert (submitted.returncode == 0) == (final == "SUCCEEDED"), submitted.stderr
    (post,) = api.calls("POST", f"{API}/runs")
    assert post["body"]["runtime_config"]["parameters"] == {
        "seed": 3,
        "source": "sample:churn",
        "target": "churn",
        "sensitive_feature": "age",
    }
    assert json.loads((tmp_path / "run.json").read_text())["state"] == final

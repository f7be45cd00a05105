"""Scheduled retraining against the recording fake KFP v2beta1 API: what ``kfloop pipeline schedule``
sends for --cron and --every, listing across pages, deleting, and bad schedules refused before any call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kfloop.pipelines.training import YAML_PATH
from tests.fakes.kfp_api import API, FakeKfpApi

pytestmark = pytest.mark.processes  # starts the fake API and CLI processes on 127.0.0.1

RECURRING = f"{API}/recurringruns"


def kfloop(*args: str, home: Path) -> subprocess.CompletedProcess:
    """The CLI as a process; HOME is redirected since kfp.Client writes ~/.config/kfp/."""
    env = {**os.environ, "KFLOOP_HOME": str(home / "kfloop"), "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "kfloop.cli", "pipeline", "schedule", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_cron_schedule_is_a_recurring_run_of_the_compiled_pipeline(tmp_path):
    with FakeKfpApi() as api:
        proc = kfloop(
            "--host", api.url, "--cron", "0 3 * * MON-FRI", "--param", "seed=3", "--data", "s3://data/churn.csv",
            "--experiment", "nightly", "--json", home=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        (create,) = api.calls("POST", RECURRING)
        experiments = api.experiments
    body = create["body"]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * MON-FRI"}}
    assert body["mode"] == "ENABLE" and int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["display_name"] == "kfloop-churn-retraining"
    assert body["experiment_id"] == experiments[0]["experiment_id"] and experiments[0]["display_name"] == "nightly"
    assert body["runtime_config"]["parameters"] == {"seed": 3, "source": "s3://data/churn.csv"}
    compiled = next(yaml.safe_load_all(YAML_PATH.read_text()))
    assert body["pipeline_spec"]["pipeline_spec"] == compiled  # the committed YAML, as submit sends it
    result = json.loads(proc.stdout)
    assert result["schedule"] == "cron 0 0 3 * * MON-FRI" and result["status"] == "ENABLED"
    assert result["parameters"] == {"seed": 3, "source": "s3://data/churn.csv"}


def test_an_interval_schedule_with_a_name_and_catchup(tmp_path):
    with FakeKfpApi() as api:
        proc = kfloop(
            "--host", api.url, "--every", "1h30m", "--model-name", "fraud", "--name", "fraud-hourly",
            "--max-concurrency", "2", "--catchup", home=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        (create,) = api.calls("POST", RECURRING)
    body = create["body"]
    assert body["trigger"] == {"periodic_schedule": {"interval_second": 5400}}
    assert body["display_name"] == "fraud-hourly" and int(body["max_concurrency"]) == 2 and body["no_catchup"] is False
    assert body["runtime_config"]["parameters"]["model_name"] == "fraud"
    assert proc.stdout.startswith("recurring run ") and "(fraud-hourly): every 5400s, ENABLED" in proc.stdout


def test_list_follows_pages_and_delete_removes_one(tmp_path):
    with FakeKfpApi() as api:
        for every in ("1h", "2h", "3h"):  # the fake's pages hold 2: listing needs two pages
            assert kfloop("--host", api.url, "--every", every, home=tmp_path).returncode == 0
        ids = list(api.recurring_runs)
        listed = kfloop("list", "--host", api.url, "--json", home=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert [j["id"] for j in json.loads(listed.stdout)] == ids
        assert [j["schedule"] for j in json.loads(listed.stdout)] == ["every 3600s", "every 7200s", "every 10800s"]
        assert len(api.calls("GET", RECURRING)) == 2
        text = kfloop("list", "--host", api.url, "--experiment", "kfloop", home=tmp_path).stdout.splitlines()
        assert text[0].split() == ["ID", "NAME", "STATUS", "SCHEDULE"] and [r.split()[0] for r in text[1:]] == ids
        deleted = kfloop("delete", ids[0], "--host", api.url, home=tmp_path)
        assert (deleted.returncode, deleted.stdout) == (0, f"recurring run {ids[0]} deleted\n")
        assert list(api.recurring_runs) == ids[1:]
        again = kfloop("delete", ids[0], "--host", api.url, home=tmp_path)
    assert again.returncode == 1 and again.stderr.strip() == f"error: no recurring run '{ids[0]}' on {api.url}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cron", "0 25 * * *"], "hour field '25' has '25', outside 0-23"),
        (["--cron", "0 3 * *"], "has 4 fields"),
        (["--every", "6 hours"], "duration '6 hours' is not valid"),
        (["--every", "10s"], "a schedule runs at most every 60s"),
        ([], "needs --cron EXPR or --every DURATION"),
        (["--every", "1h", "--param", "threshold=-3"], "gate threshold -3.0"),
        (["--every", "1h", "--max-concurrency", "0"], "max concurrency 0 must be >= 1"),
    ],
)
def test_bad_schedules_are_refused_before_any_call(args, message, tmp_path):
    with FakeKfpApi() as api:
        proc = kfloop("--host", api.url, *args, home=tmp_path)
        requests = list(api.requests)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert requests == []  # not even the health check


def test_cron_and_every_together_is_a_usage_error(tmp_path):
    proc = kfloop("--host", "http://127.0.0.1:9", "--cron", "@daily", "--every", "1d", home=tmp_path)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_an_unreachable_api_is_one_error_line(tmp_path):
    proc = kfloop("list", "--host", "http://127.0.0.1:9", home=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("error: could not list the recurring runs on")
    assert "Traceback" not in proc.stderr

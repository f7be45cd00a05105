"""The monitoring pipeline: its committed YAML is a fresh compile, ``kfloop monitor run`` runs it for real
under kfp.local over captures the batch job wrote (a low-traffic model: one pooled window) and delivers
its alerts to a sink, ``submit`` and ``schedule`` reach a (fake, recording) KFP API, and bad input is
refused before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kfloop.batch.job import BatchOptions, run_batch
from kfloop.config import DEFAULT_IMAGE, Settings
from kfloop.names import DRIFT_DETECTED, MULTIVARIATE_DRIFT_DETECTED
from kfloop.pipelines.monitoring import YAML_PATH, compile_pipeline
from kfloop.retraining.policy import read_signal
from tests.batch.conftest import register_churn
from tests.fakes.bundles import churn_frame
from tests.fakes.event_sink import EventSink
from tests.fakes.kfp_api import API, FakeKfpApi

pytestmark = pytest.mark.processes  # CLI processes, a kfp.local run, a fake KFP API, an event sink

PARAMETERS = {
    "model", "since", "until", "window_rows", "min_rows", "min_labels", "quality_metric", "quality_threshold",
    "quality_margin", "estimated_threshold", "emit", "sink_url",
}  # fmt: skip


def test_committed_monitoring_yaml_is_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(tmp_path / "monitoring.yaml", image=DEFAULT_IMAGE)
    assert fresh.read_bytes() == YAML_PATH.read_bytes(), (
        "pipelines/monitoring.yaml is stale: run 'kfloop monitor compile' and commit it"
    )


def test_monitoring_yaml_is_valid_kfp_ir_with_an_uncached_step_and_report_artifacts():
    spec, platform = yaml.safe_load_all(YAML_PATH.read_text())
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert parsed.pipeline_info.name == "kfloop-monitoring"
    (task,) = parsed.root.dag.tasks.values()
    assert not task.caching_options.enable_cache
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == PARAMETERS
    (component,) = spec["components"].values()
    artifacts = component["outputDefinitions"]["artifacts"]
    assert artifacts["report"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert artifacts["report_html"]["artifactType"]["schemaTitle"] == "system.HTML"
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    (config,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert {s["secretName"] for s in config["secretAsEnv"]} == {"kfloop-s3"}


@pytest.fixture
def home(tmp_path) -> Path:
    register_churn(Settings(home=tmp_path / "home"), tmp_path / "bundle")
    return tmp_path / "home"


def kfloop(*args: str, home: Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "KFLOOP_HOME": str(home), "HOME": str(home.parent)}
    env.pop("K_SINK", None)
    return subprocess.run(
        [sys.executable, "-m", "kfloop.cli", "monitor", *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_monitor_run_checks_real_captures_of_a_low_traffic_model_and_delivers_its_alert(home, tmp_path):
    # 150 served rows, older customers: fewer than one live window (500), so the job pools the range
    churn_frame(150, seed=5).assign(tenure=lambda f: f["tenure"] + 40).to_parquet(tmp_path / "in.parquet")
    options = BatchOptions("churn:1", str(tmp_path / "in.parquet"), str(tmp_path / "out.csv"), drift=False)
    run_batch(options, Settings(home=home), progress=lambda line: None)
    sink = EventSink()
    try:
        proc = kfloop(
            "run", "--model", "churn", "--since", "2h", "--sink-url", sink.url, "--report", "report.html",
            home=home, cwd=tmp_path,
        )  # fmt: skip
    finally:
        sink.close()
    assert proc.returncode == 0, proc.stderr
    assert "version 1: 150 captured rows, 0 labeled" in proc.stderr
    assert "feature_drift        1 alerting, 0 ok, 0 too few rows" in proc.stdout
    assert "multivariate_drift   1 alerting, 0 ok, 0 too few rows" in proc.stdout  # the domain classifier too
    assert f"events: 2 emitted, 2 delivered to {sink.url}, 0 pending" in proc.stdout
    (event,) = sink.of_type(DRIFT_DETECTED)
    assert len(sink.of_type(MULTIVARIATE_DRIFT_DETECTED)) == 1
    assert read_signal(event).is_drift and event["data"]["data"]["window_size"] == 150
    assert "tenure" in event["data"]["data"]["p_val_by_feature"]
    page = (tmp_path / "report.html").read_text()
    assert "the whole range is one pooled window" in page and "<img id='plot-feature_drift'" in page
    run_dir = Path(proc.stdout.split("outputs: ")[1].split()[0])
    markdown = (run_dir / "monitor" / "report").read_text()
    assert "| feature_drift | 1 | 0 | 150 |" in markdown


def test_monitor_run_reports_a_range_without_captures_and_emits_nothing(home, tmp_path):
    proc = kfloop("run", "--model", "churn", "--json", home=home, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["windows"] == [] and summary["events"]["emitted"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "fraud"], "error: model 'fraud' has no registered version"),
        (["--model", "Bad/Name"], "error: model name 'Bad/Name' is not valid"),
        (["--model", "churn", "--since", "yesterday"], "error: --since 'yesterday' is neither a time"),
        (["--model", "churn", "--since", "1h", "--until", "2h"], "error: the monitored range is empty"),
        (["--model", "churn", "--window-rows", "0"], "error: monitoring window_rows is 0"),
        (["--model", "churn", "--quality-margin", "2"], "error: quality margin is 2.0"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(home, tmp_path, args, message):
    proc = kfloop("run", *args, home=home, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith(message), proc.stderr
    assert not (home / "runs").exists()


def test_monitor_submit_sends_the_monitoring_pipeline(home, tmp_path):
    with FakeKfpApi(run_states=("SUCCEEDED",)) as api:
        proc = kfloop(
            "submit", "--host", api.url, "--model", "fraud", "--since", "7d", "--poll-seconds", "0.05", "--wait",
            "--json", home=home, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (post,) = api.calls("POST", f"{API}/runs")
    pipeline_spec, platform_spec = yaml.safe_load_all(YAML_PATH.read_text())
    assert post["body"]["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    parameters = post["body"]["runtime_config"]["parameters"]
    assert set(parameters) == PARAMETERS and (parameters["model"], parameters["since"]) == ("fraud", "7d")
    assert post["body"]["display_name"].startswith("kfloop-monitor-fraud-")


def test_monitor_schedule_creates_lists_and_deletes_a_recurring_run(home, tmp_path):
    with FakeKfpApi() as api:
        proc = kfloop(
            "schedule", "--host", api.url, "--model", "churn", "--every", "1d", "--since", "1d", "--json",
            home=home, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        (create,) = api.calls("POST", f"{API}/recurringruns")
        body = create["body"]
        assert body["trigger"] == {"periodic_schedule": {"interval_second": 86400}}
        assert body["display_name"] == "kfloop-churn-monitoring"
        assert body["description"] == "kfloop scheduled monitoring (every 86400s)"
        assert body["runtime_config"]["parameters"]["since"] == "1d"
        assert body["pipeline_spec"]["pipeline_spec"] == next(yaml.safe_load_all(YAML_PATH.read_text()))
        created = json.loads(proc.stdout)["id"]
        listed = kfloop("schedule", "list", "--host", api.url, "--json", home=home, cwd=tmp_path)
        assert [j["id"] for j in json.loads(listed.stdout)] == [created]
        deleted = kfloop("schedule", "delete", created, "--host", api.url, home=home, cwd=tmp_path)
        assert deleted.returncode == 0 and not api.recurring_runs
        bad = kfloop("schedule", "--host", api.url, "--model", "churn", "--cron", "61 * * * *", home=home, cwd=tmp_path)
        assert bad.returncode == 1 and "error:" in bad.stderr
        assert len(api.calls("POST", f"{API}/recurringruns")) == 1  # refused before any call

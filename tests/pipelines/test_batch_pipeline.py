"""The batch pipeline: its committed YAML is a fresh compile, ``kfloop batch run`` runs it for real under
kfp.local, ``kfloop batch submit`` sends it to a (fake, recording) KFP API, and bad input is refused
before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kfloop.config import DEFAULT_IMAGE, Settings
from kfloop.monitoring.capture import read_captures
from kfloop.pipelines.batch import YAML_PATH, compile_pipeline
from kfloop.store.objects import open_store
from tests.batch.conftest import register_churn
from tests.fakes.bundles import churn_frame
from tests.fakes.kfp_api import API, FakeKfpApi

pytestmark = pytest.mark.processes  # CLI processes, a kfp.local run, a fake KFP API


def test_committed_batch_yaml_is_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(tmp_path / "batch.yaml", image=DEFAULT_IMAGE)
    assert fresh.read_bytes() == YAML_PATH.read_bytes(), (
        "pipelines/batch.yaml is stale: run 'kfloop batch compile' and commit it"
    )


def test_batch_yaml_is_valid_kfp_ir_with_an_uncached_step_and_no_secrets():
    spec, platform = yaml.safe_load_all(YAML_PATH.read_text())
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert parsed.pipeline_info.name == "kfloop-batch"
    (task,) = parsed.root.dag.tasks.values()
    assert not task.caching_options.enable_cache
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "model", "input_uri", "output_uri", "rejects_uri", "id_column", "chunk_rows", "capture", "drift"
    }  # fmt: skip
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    (executor,) = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == DEFAULT_IMAGE
    assert not [e for e in executor["container"].get("env", []) if e["name"].startswith("KFLOOP_S3")]
    (config,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert {e["envVar"] for s in config["secretAsEnv"] for e in s["keyToEnv"]} == {
        "KFLOOP_S3_ACCESS_KEY", "KFLOOP_S3_SECRET_KEY"
    }  # fmt: skip
    assert {s["secretName"] for s in config["secretAsEnv"]} == {"kfloop-s3"}


@pytest.fixture
def home(tmp_path) -> Path:
    register_churn(Settings(home=tmp_path / "home"), tmp_path / "bundle")
    return tmp_path / "home"


def kfloop(*args: str, home: Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "KFLOOP_HOME": str(home), "HOME": str(home.parent)}
    return subprocess.run(
        [sys.executable, "-m", "kfloop.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_batch_run_predicts_locally_through_kfp_local_with_progress_per_chunk(home, tmp_path):
    churn_frame(500, seed=2).assign(customer=[f"c{i}" for i in range(500)]).to_parquet(tmp_path / "in.parquet")
    proc = kfloop(
        "batch", "run", "--model", "churn@staging", "--input", "in.parquet", "--output", "out.csv",
        "--id-column", "customer", "--chunk-rows", "200", home=home, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0].strip() for line in proc.stderr.splitlines() if "chunk" in line] == [
        "chunk 0", "chunk 1", "chunk 2"
    ]  # fmt: skip
    assert "churn:1: 500 of 500 rows predicted, 0 rejected, 500 captured" in proc.stdout
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["customer"].tolist() == [f"c{i}" for i in range(500)]
    assert len(read_captures(open_store(Settings(home=home)), "churn")) == 500


@pytest.mark.parametrize(
    ("model", "columns", "message"),
    [
        ("churn:9", None, "error: no version 9 of model 'churn'"),
        ("churn@production", None, "error: model 'churn' has no version in stage 'production'"),
        ("churn@champion", None, "error: model 'churn' has no alias 'champion'"),
        ("Bad/Name", None, "error: model name 'Bad/Name' is not valid"),
        ("churn", ["tenure", "plan"], "error: input file://{dir}/in.csv lacks the feature columns ['charges']"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(home, tmp_path, model, columns, message):
    frame = churn_frame(20)
    frame[columns or frame.columns].to_csv(tmp_path / "in.csv", index=False)
    proc = kfloop("batch", "run", "--model", model, "--input", "in.csv", "--output", "o.csv", home=home, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [message.format(dir=tmp_path)] or proc.stderr.startswith(
        message.format(dir=tmp_path)
    )
    assert not (home / "runs").exists() and not (tmp_path / "o.csv").exists()


def test_batch_submit_sends_the_batch_pipeline_with_the_resolved_version(home, tmp_path):
    churn_frame(20).to_csv(tmp_path / "in.csv", index=False)
    with FakeKfpApi(run_states=("RUNNING", "SUCCEEDED")) as api:
        proc = kfloop(
            "batch", "submit", "--host", api.url, "--model", "churn@staging", "--input", "s3://data/in.csv",
            "--output", "s3://data/out.parquet", "--poll-seconds", "0.05", "--wait", "--json",
            home=home, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (post,) = api.calls("POST", f"{API}/runs")
    run = post["body"]
    pipeline_spec, platform_spec = yaml.safe_load_all(YAML_PATH.read_text())
    assert run["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    assert run["runtime_config"]["parameters"] == {
        "model": "churn:1", "input_uri": "s3://data/in.csv", "output_uri": "s3://data/out.parquet",
        "rejects_uri": "", "id_column": "", "chunk_rows": 100000, "capture": True, "drift": True,
    }  # fmt: skip
    assert run["display_name"].startswith("kfloop-batch-churn-")
    assert json.loads(proc.stdout)["state"] == "SUCCEEDED"


def test_batch_submit_refuses_an_unknown_version_without_contacting_the_api(home, tmp_path):
    with FakeKfpApi() as api:
        proc = kfloop(
            "batch", "submit", "--host", api.url, "--model", "churn:4", "--input", "s3://d/in.csv",
            "--output", "s3://d/out.csv", home=home, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 1 and "no version 4 of model 'churn'" in proc.stderr
    assert api.requests == []

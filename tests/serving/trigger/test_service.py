"""The retraining trigger service as a real process on 127.0.0.1: CloudEvents in, runs started once,
results reported as CloudEvents to a sink; restarts, the cluster path against a fake KFP API, feedback.

Most tests run a tiny stand-in for the training pipeline (``--runner_cmd``): it records its
arguments, optionally waits for a release file, and prints what ``kfloop pipeline run --json``
prints. One test runs the real pipeline on 800 rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from kfloop.events.cloudevents import make_event
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.names import (
    DRIFT_DETECTED,
    FEEDBACK,
    MAX_FEEDBACK_LABELS,
    MAX_JSON_DEPTH,
    QUALITY_DEGRADED,
    RETRAIN_FINISHED,
    RETRAIN_STARTED,
)
from kfloop.pipelines.training import YAML_PATH
from kfloop.store.event_log import read_events
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.conftest import free_port, wait_for
from tests.fakes.bundles import build_bundle, churn_frame
from tests.fakes.event_sink import EventSink
from tests.fakes.kfp_api import API, FakeKfpApi
from tests.serving.trigger_process import (
    Trigger,
    drift,  # noqa: F401
    kill_fake_runs,
)

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1


@pytest.fixture
def sink():
    s = EventSink()
    yield s
    s.close()


@pytest.fixture
def start(tmp_path, sink):
    """Start trigger processes; all are stopped (and must have exited cleanly) at the end."""
    started: list[Trigger] = []

    def _start(*args: str, **kwargs) -> Trigger:
        started.append(Trigger(tmp_path, sink, *args, **kwargs))
        return started[-1]

    yield _start
    codes = [t.stop() for t in started]
    for t in started:
        kill_fake_runs(t.home)
    assert all(code == 0 for code in codes), [t.output() for t in started]


def finished(sink: EventSink, timeout: float = 20.0) -> dict:
    return wait_for(lambda: sink.of_type(RETRAIN_FINISHED), timeout, "retrain.finished")[0]


def store_keys(home: Path) -> list[str]:
    return LocalStore(home).list("") if home.exists() else []


# -- events in ------------------------------------------------------------------------------------


def test_malformed_events_and_unknown_types_are_rejected_and_change_nothing(start, sink):
    trigger = start("--consecutive_windows", "1", "--max_body_bytes", "100000")
    url = f"{trigger.url}/"
    structured = {"content-type": "application/cloudevents+json"}
    huge = drift(0)
    huge["data"]["meta"]["padding"] = "x" * 200_000
    assert trigger.post(huge).status_code == 413
    bad = [
        httpx.post(url, content=b"{not json", headers=structured),
        httpx.post(url, content=json.dumps({"id": "1", "type": DRIFT_DETECTED}), headers=structured),
        httpx.post(
            url,
            content=b"[1]",
            headers={
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "s",
                "ce-type": DRIFT_DETECTED,
                "content-type": "application/json",
            },
        ),
        trigger.post(make_event("io.kfloop.something.else", "s", {"model": "churn"})),
        trigger.post({**drift(0), "subject": None, "data": {"data": {"is_drift": 1}}}),
        trigger.post(make_event(DRIFT_DETECTED, "s", {"model": "churn", "data": {"is_drift": "maybe"}})),
    ]
    assert [r.status_code for r in bad] == [400] * len(bad), [r.text for r in bad]
    messages = [r.json()["error"] for r in bad]
    assert "not valid JSON" in messages[0] and "specversion" in messages[1]
    assert "must be a JSON object" in messages[2] and "io.kfloop.something.else" in messages[3]
    assert "no valid model" in messages[4] and "is_drift" in messages[5]
    assert trigger.status()["models"] == {}
    assert not [k for k in store_keys(trigger.home) if k.startswith(("trigger/", "events/"))]
    metrics = httpx.get(f"{trigger.url}/metrics").text
    assert 'kfloop_trigger_events_total{outcome="rejected",type="other"} 3.0' in metrics
    assert 'kfloop_trigger_events_total{outcome="rejected",type="io.kfloop.drift.detected"} 3.0' in metrics
    assert not trigger.runs() and not sink.events


def test_the_same_drift_event_twice_starts_one_run_and_reports_it(start, sink):
    trigger = start(
        "--consecutive_windows",
        "1",
        "--original_source",
        "sample:churn?n_rows=800",
        "--pipeline_params",
        "seed=3",
        "n_estimators=20",
    )
    event = drift(0)
    first, again = trigger.post(event, binary=True), trigger.post(event)
    assert first.status_code == 200 and again.status_code == 200
    assert first.json()["action"] == "start" and again.json()["action"] == "duplicate"
    result = finished(sink)
    assert len(trigger.runs()) == 1
    assert trigger.runs()[0] == {
        "source": "sample:churn?n_rows=800",
        "model_name": "churn",
        "seed": "3",
        "n_estimators": "20",
    }
    (started,) = sink.of_type(RETRAIN_STARTED)
    assert started["subject"] == "churn"
    assert {k: started["data"][k] for k in ("event_id", "strategy", "source", "target")} == {
        "event_id": event["id"],
        "strategy": "combined",
        "source": "sample:churn?n_rows=800",
        "target": "local",
    }
    assert started["data"]["arguments"]["seed"] == 3  # typed by the pipeline's parameter types
    assert result["data"]["run_id"] == started["data"]["run_id"]
    assert result["data"]["status"] == "succeeded" and result["data"]["registered"] == "churn:7"
    logged = read_events(LocalStore(trigger.home), "churn")
    assert [e["type"] for e in logged] == [DRIFT_DETECTED, RETRAIN_STARTED, RETRAIN_FINISHED]
    status = trigger.status("churn")
    assert status["in_flight"] is None and status["runs"][-1]["registered"] == "churn:7"
    metrics = httpx.get(f"{trigger.url}/metrics").text
    assert 'kfloop_trigger_runs_started_total{target="local"} 1.0' in metrics
    assert 'kfloop_trigger_runs_finished_total{status="succeeded"} 1.0' in metrics
    assert 'kfloop_trigger_events_total{outcome="duplicate",type="io.kfloop.drift.detected"} 1.0' in metrics


def test_two_consecutive_drifted_windows_start_a_run_a_gap_does_not(start, sink):
    trigger = start("--consecutive_windows", "2", "--original_source", "sample:churn?n_rows=800")
    actions = [trigger.post(drift(w)).json()["action"] for w in (0, 2, 4)]
    assert actions == ["waiting"] * 3
    assert trigger.status("churn")["streak"] == 1
    assert trigger.post(drift(5)).json()["action"] == "start"
    assert finished(sink)["data"]["status"] == "succeeded"
    assert len(trigger.runs()) == 1


def test_a_run_without_a_new_version_says_why(start, sink):
    trigger = start(
        "--consecutive_windows", "1", "--original_source", "sample:churn", new_models=("fail-churn", "gate-churn")
    )
    assert trigger.post(drift(0, model="fail-churn")).json()["action"] == "start"
    assert trigger.post(drift(0, model="gate-churn")).json()["action"] == "start"  # one run per model
    wait_for(lambda: len(sink.of_type(RETRAIN_FINISHED)) == 2, what="both runs to finish")
    results = {e["subject"]: e["data"] for e in sink.of_type(RETRAIN_FINISHED)}
    assert {m: (r["status"], r["registered"], r["reason"]) for m, r in results.items()} == {
        "fail-churn": ("failed", None, "data quality rule 'not_empty' failed for data: no rows"),
        "gate-churn": (
            "succeeded",
            None,
            "the quality gate did not pass: candidate auc 0.51 is below the threshold 0.7",
        ),
    }


def test_a_restarted_trigger_does_not_start_the_run_again_and_picks_up_its_result(start, sink, tmp_path):
    release = tmp_path / "release"
    env = {"FAKE_RELEASE": str(release)}
    trigger = start("--consecutive_windows", "1", "--original_source", "sample:churn", env=env)
    event = drift(0)
    assert trigger.post(event).json()["action"] == "start"
    wait_for(lambda: trigger.runs(), what="the run to start")
    assert trigger.stop() == 0  # mid-run; the worker process keeps going

    again = start("--consecutive_windows", "1", "--original_source", "sample:churn", env=env)
    assert again.post(event).json()["action"] == "duplicate"
    assert again.post(drift(1)).json()["action"] == "in_flight"
    release.touch()
    result = finished(sink)["data"]
    assert result["status"] == "succeeded" and result["registered"] == "churn:7"
    assert len(again.runs()) == 1
    assert len(sink.of_type(RETRAIN_STARTED)) == 1


def test_a_run_that_vanished_while_the_trigger_was_down_is_reported_failed(start, sink, tmp_path):
    env = {"FAKE_RELEASE": str(tmp_path / "never")}
    trigger = start("--consecutive_windows", "1", "--original_source", "sample:churn", env=env)
    trigger.post(drift(0))
    wait_for(lambda: trigger.runs(), what="the run to start")
    trigger.stop()
    kill_fake_runs(trigger.home)
    start("--consecutive_windows", "1", "--original_source", "sample:churn", env=env)
    result = finished(sink)["data"]
    assert result["status"] == "failed" and "is gone and left no result" in result["reason"]


def test_combined_strategy_trains_on_the_registered_versions_data(start, sink, tmp_path):
    home = tmp_path / "home"
    frame = churn_frame(n=120)
    original = tmp_path / "original.csv"
    frame.to_csv(original, index=False)
    bundle, _, _ = build_bundle(tmp_path / "bundle", frame, "churned")
    Registry(LocalStore(home)).register("churn", bundle, lineage={"data_uri": original.as_uri()})
    trigger = start("--consecutive_windows", "1")
    trigger.post(drift(0))
    finished(sink)
    (params,) = trigger.runs()
    assert params["target"] == "churned" and params["model_name"] == "churn"
    data = pd.read_parquet(params["source"])
    assert len(data) == 120 and list(data.columns) == ["tenure", "charges", "plan", "churned"]
    (started,) = sink.of_type(RETRAIN_STARTED)
    assert started["data"]["rows"] == 120 and started["data"]["source"] == params["source"]


# -- feedback ------------------------------------------------------------------------------------


def registered_with_captures(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A registered churn model (version 1) and ``n`` captured predictions of it, all saying 'churned'."""
    home, frame = tmp_path / "home", churn_frame(n=n)
    bundle, _, _ = build_bundle(tmp_path / "bundle", frame, "churned")
    frame.to_csv(tmp_path / "original.csv", index=False)
    store = LocalStore(home)
    Registry(store).register("churn", bundle, lineage={"data_uri": (tmp_path / "original.csv").as_uri()})
    ids = [uuid.uuid4().hex for _ in range(n)]
    with CaptureWriter(store, "churn") as writer:
        writer.add(
            [
                capture_record("churn", "1", row, [0.1, 0.9], request_id=f"{i}:0")
                for i, row in zip(ids, frame.drop(columns="churned").to_dict("records"))
            ]
        )
    return home, ids


def test_feedback_with_unknown_ids_or_wrong_labels_stores_nothing(start, sink, tmp_path):
    home, ids = registered_with_captures(tmp_path, 5)
    trigger = start()
    url = f"{trigger.url}/v1/feedback"
    unknown = trigger.feedback(
        {"model": "churn", "labels": [{"request_id": ids[0], "label": 1}, {"request_id": "nope", "label": 0}]}
    )
    wrong = trigger.feedback({"model": "churn", "labels": [{"request_id": ids[0], "label": "maybe"}]})
    no_model = trigger.feedback({"model": "other", "labels": [{"request_id": ids[0], "label": 1}]})
    not_json = httpx.post(url, content=b"labels", headers=trigger.auth)
    bad_json = httpx.post(url, content=b"labels", headers={**trigger.auth, "content-type": "application/json"})
    assert [r.status_code for r in (unknown, wrong, no_model, not_json, bad_json)] == [400, 400, 404, 415, 400]
    assert "'nope'" in unknown.json()["error"] and "nothing was stored" in unknown.json()["error"]
    assert "maybe" in wrong.json()["error"]
    as_event = make_event(FEEDBACK, "client", {"model": "churn", "labels": [{"request_id": "nope", "label": 0}]})
    assert trigger.post(as_event).status_code == 400
    assert not [k for k in store_keys(home) if k.startswith(("feedback/", "trigger/", "events/"))]


def test_feedback_showing_degraded_quality_starts_a_run(start, sink, tmp_path):
    home, ids = registered_with_captures(tmp_path, 30)
    trigger = start("--quality_window", "20", "--quality_threshold", "0.5", "--consecutive_windows", "9")
    half = [{"request_id": i, "label": 0} for i in ids[:15]]  # the model said 'churned' (0.9): all wrong
    first = trigger.feedback({"model": "churn", "labels": half})
    assert first.status_code == 200 and first.json()["feedback"] == {"accepted": 15}
    assert first.json()["quality"] == []  # no complete window of 20 labeled rows yet
    event = make_event(
        FEEDBACK, "client", {"model": "churn", "labels": [{"request_id": i, "label": 0} for i in ids[15:]]}
    )
    second = trigger.post(event).json()
    (quality,) = second["quality"]
    assert quality["type"] == QUALITY_DEGRADED and quality["action"] == "start"
    result = finished(sink)["data"]
    assert result["event_id"] == quality["event_id"] and result["status"] == "succeeded", result["reason"]
    (degraded,) = sink.of_type(QUALITY_DEGRADED)
    assert degraded["data"]["value"] == 0.0 and degraded["data"]["window_index"] == 0
    assert trigger.post(degraded).json()["action"] == "duplicate"  # the broker routes it back: no second run
    (params,) = trigger.runs()
    assert len(pd.read_parquet(params["source"])) == 30 + 30  # original rows + the labeled captured rows


# -- the cluster path ------------------------------------------------------------------------------


class FakeKfpWithRuns(FakeKfpApi):
    """The fake KFP API, plus ``GET /runs`` filtered by a display-name substring; keeps the
    Authorization header of every request in ``auth``."""

    def __init__(self, *args, **kwargs):
        self.auth: list[str | None] = []
        super().__init__(*args, **kwargs)

    def _handler_class(self):
        api = self

        class Handler(super()._handler_class()):
            def _serve(self, method: str) -> None:
                api.auth.append(self.headers.get("Authorization"))
                super()._serve(method)

        return Handler

    def answer(self, method, path, query, body):
        if (method, path) == ("GET", f"{API}/runs"):
            (predicate,) = json.loads(query["filter"][0])["predicates"]
            assert predicate["key"] == "display_name" and predicate["operation"] in ("IS_SUBSTRING", 9)
            text = predicate.get("string_value") or predicate.get("stringValue")
            runs = [r for r in self.runs.values() if text in r.get("display_name", "")]
            return 200, ({"runs": runs, "total_size": len(runs)} if runs else {})
        return super().answer(method, path, query, body)


def compiled_docs() -> list[dict]:
    return list(yaml.safe_load_all(YAML_PATH.read_text()))


def test_cluster_run_carries_the_compiled_spec_and_the_policys_parameters(start, sink, tmp_path):
    token = tmp_path / "token"
    token.write_text("sa-token-1")
    with FakeKfpWithRuns(run_states=("RUNNING", "SUCCEEDED")) as api:
        trigger = start(
            "--target",
            "kfp",
            "--kfp_host",
            api.url,
            "--consecutive_windows",
            "1",
            "--original_source",
            "s3://data/churn.csv",
            "--pipeline_params",
            "max_depth=3",
            env={"KF_PIPELINES_SA_TOKEN_PATH": str(token)},
        )
        event = drift(0)
        assert trigger.post(event).json()["action"] == "start"
        result = finished(sink)["data"]
        assert trigger.post(drift(1)).json()["action"] == "start"  # cooldown 0: the next drift retrains
        wait_for(lambda: len(sink.of_type(RETRAIN_FINISHED)) == 2, what="the second run")
    posts = api.calls("POST", f"{API}/runs")
    assert len(posts) == 2
    run = posts[0]["body"]
    pipeline_spec, platform_spec = compiled_docs()
    assert run["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    assert run["runtime_config"]["parameters"] == {
        "source": "s3://data/churn.csv",
        "model_name": "churn",
        "max_depth": 3,
    }
    assert run["display_name"] == f"kfloop-churn-{event['id']}"
    assert result["run_id"] in api.runs and result["status"] == "succeeded"
    assert result["registered"] is None and "registered no version" in result["reason"]
    assert api.auth and set(api.auth) == {"Bearer sa-token-1"}  # the projected ServiceAccount token


def test_a_cluster_run_already_in_flight_prevents_a_second(start, sink):
    with FakeKfpWithRuns(run_states=("RUNNING", "RUNNING", "FAILED")) as api:
        api.runs["old-run"] = {
            "run_id": "old-run",
            "display_name": "kfloop-churn-earlier-event",
            "state": "RUNNING",
            "runtime_config": {"parameters": {"model_name": "churn"}},
        }
        trigger = start(
            "--target", "kfp", "--kfp_host", api.url, "--consecutive_windows", "1", "--original_source", "sample:churn"
        )
        trigger.post(drift(0))
        result = finished(sink)["data"]
    assert not api.calls("POST", f"{API}/runs")
    assert result["run_id"] == "old-run" and result["status"] == "failed"
    assert "old-run ended FAILED" in result["reason"]


def test_kfp_api_down_is_retried_then_reported_failed(start, sink):
    down = f"http://127.0.0.1:{free_port()}"
    trigger = start(
        "--target",
        "kfp",
        "--kfp_host",
        down,
        "--consecutive_windows",
        "1",
        "--original_source",
        "sample:churn",
        "--launch_attempts",
        "3",
    )
    event = drift(0)
    trigger.post(event)
    result = finished(sink)["data"]
    assert result["status"] == "failed" and result["event_id"] == event["id"]
    assert result["reason"].startswith("could not start the run after 3 attempts: ")
    assert not sink.of_type(RETRAIN_STARTED)
    status = trigger.status("churn")
    assert status["in_flight"] is None and status["runs"][-1]["status"] == "failed"


# -- the real pipeline -----------------------------------------------------------------------------


def test_real_pipeline_run_registers_a_version(start, sink, tmp_path):
    trigger = start(
        "--consecutive_windows",
        "1",
        "--original_source",
        "sample:churn?n_rows=800",
        "--pipeline_params",
        "n_estimators=20",
        fake=False,
    )
    trigger.post(drift(0))
    result = finished(sink, timeout=120)["data"]
    assert result["status"] == "succeeded", result["reason"]
    assert result["registered"] == "churn:1"
    record = Registry(LocalStore(trigger.home)).get("churn", 1)
    assert record.lineage["data_uri"].startswith("sample:churn") and "n_rows=800" in record.lineage["data_uri"]
    assert record.lineage["parameters"]["n_estimators"] == 20


def test_bad_settings_stop_the_service_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kfloop.serving.trigger.service", "--target", "kfp", "--port", "1"],
        env={**os.environ, "KFLOOP_HOME": str(tmp_path), "KFLOOP_KFP_HOST": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: --target kfp needs --kfp_host or KFLOOP_KFP_HOST"]


def test_tuning_ranges_that_make_no_sense_stop_the_service_before_it_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kfloop.serving.trigger.service", "--port", "1", "--tuning", "retune"]
        + ["--pipeline_params", "tuning_trials=5", 'tuning_ranges={"max_depth": [9, 3]}'],
        env={**os.environ, "KFLOOP_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: tuning range for max_depth: [9, 3] is empty (low must be below high)"
    ]


def test_state_on_s3_survives_a_restart_on_a_fresh_disk(start, sink, s3_settings, tmp_path):
    s3 = {k: v for k, v in s3_settings.storage_env().items() if k != "KFLOOP_HOME"}
    trigger = start(
        "--consecutive_windows",
        "2",
        "--original_source",
        "sample:churn",
        env={**s3, "KFLOOP_HOME": str(tmp_path / "disk-1")},
    )
    assert trigger.post(drift(3)).json()["action"] == "waiting"
    trigger.stop()
    again = start(
        "--consecutive_windows",
        "2",
        "--original_source",
        "sample:churn",
        env={**s3, "KFLOOP_HOME": str(tmp_path / "disk-2")},
    )
    assert again.post(drift(4)).json()["action"] == "start"  # the streak was kept in the bucket
    assert finished(sink)["data"]["status"] == "succeeded"
    assert not (tmp_path / "disk-1" / "trigger" / "churn").exists()


def test_deep_nesting_huge_event_ids_and_oversized_feedback_are_400_and_change_nothing(start, sink, tmp_path):
    home, ids = registered_with_captures(tmp_path, 5)
    trigger = start("--consecutive_windows", "1", "--max_body_bytes", "2000000")
    url = f"{trigger.url}/"
    nested = b"[" * 100_000 + b"]" * 100_000
    just_over = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    structured = {"content-type": "application/cloudevents+json"}
    binary = {"ce-specversion": "1.0", "ce-source": "s", "ce-type": DRIFT_DETECTED, "content-type": "application/json"}
    body = json.dumps(drift(0)).encode()
    answers = {
        "nested structured event": httpx.post(url, content=body[:-1] + b', "x": ' + nested + b"}", headers=structured),
        "nested binary data": httpx.post(url, content=nested, headers={**binary, "ce-id": "n-1"}),
        "just over the depth": httpx.post(url, content=just_over, headers={**binary, "ce-id": "n-2"}),
        "100 KB id header": httpx.post(url, content=b"{}", headers={**binary, "ce-id": "i" * 100_000}),
        "100 KB id structured": trigger.post({**drift(0), "id": "i" * 100_000}),
        "nested feedback": httpx.post(
            f"{trigger.url}/v1/feedback", content=nested, headers={**trigger.auth, "content-type": "application/json"}
        ),
        "feedback over the batch limit": trigger.feedback(
            {"model": "churn", "labels": [{"request_id": ids[0], "label": 1}] * (MAX_FEEDBACK_LABELS + 1)}
        ),
    }
    statuses = {what: a.status_code for what, a in answers.items()}
    assert statuses == dict.fromkeys(answers, 400), {w: a.text[:200] for w, a in answers.items()}
    errors = {what: a.json()["error"] for what, a in answers.items()}
    assert all(
        f"nested deeper than {MAX_JSON_DEPTH} levels" in errors[w] for w in list(errors)[:3] + ["nested feedback"]
    )
    assert "CloudEvent id is 100000 bytes long: the limit is 256 bytes" in errors["100 KB id header"]
    assert "the limit is 256 bytes" in errors["100 KB id structured"]
    assert f"over the limit of {MAX_FEEDBACK_LABELS}" in errors["feedback over the batch limit"]
    assert httpx.get(f"{trigger.url}/healthz").status_code == 200
    assert not [k for k in store_keys(home) if k.startswith(("feedback/", "trigger/", "events/"))]
    assert not trigger.runs() and not sink.events

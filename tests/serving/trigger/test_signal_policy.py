"""The trigger service with a per-signal policy (a policy file and --signal_rule): an alert-only signal
is recorded and starts nothing, a signal the policy lets retrain starts a run with its evidence, and a
bad policy stops the service at start naming the problem."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kfloop.events.cloudevents import make_event
from kfloop.names import DATA_QUALITY_VIOLATED, ESTIMATED_QUALITY_DROPPED, RETRAIN_STARTED
from tests.fakes.event_sink import EventSink
from tests.serving.trigger_process import Trigger, kill_fake_runs

pytestmark = pytest.mark.processes  # starts the trigger service on 127.0.0.1


def signal(type_: str, window: int, value: float, direction: str = "below") -> dict:
    data = {"model": "churn", "model_version": "1", "status": "alert", "value": value, "threshold": 0.0,
            "direction": direction, "window_index": window, "evidence": {"checked": "by the job"}}  # fmt: skip
    return make_event(type_, "kfloop/monitor/churn", data, subject="churn")


def test_alert_only_signals_are_recorded_and_a_retraining_rule_starts_a_run(tmp_path):
    (tmp_path / "policy.yaml").write_text("signals:\n  estimated_quality: {action: retrain, consecutive_windows: 1}\n")
    sink = EventSink()
    trigger = Trigger(
        tmp_path, sink, "--policy_file", str(tmp_path / "policy.yaml"),
        "--signal_rule", "estimated_quality=retrain,windows=2,threshold=0.7", "--original_source", "sample:churn",
    )  # fmt: skip
    try:
        alert = trigger.post(signal(DATA_QUALITY_VIOLATED, 0, 3, "above")).json()
        assert alert["action"] == "alert" and alert["evidence"]["details"] == {"checked": "by the job"}
        answers = [trigger.post(signal(ESTIMATED_QUALITY_DROPPED, i, v)).json() for i, v in enumerate([0.75, 0.6, 0.5])]
        assert [a["action"] for a in answers] == ["ignore", "waiting", "start"]  # the flag's rule over the file's
        status = trigger.status("churn")
        assert [a["signal"] for a in status["alerts"]] == ["data_quality"]
        assert status["policy"]["rules"]["estimated_quality"] == {
            "action": "retrain", "consecutive_windows": 2, "threshold": 0.7
        }  # fmt: skip
        for _ in range(400):
            if sink.of_type(RETRAIN_STARTED):
                break
            time.sleep(0.05)
        (started,) = sink.of_type(RETRAIN_STARTED)
        assert started["data"]["evidence"]["value"] == 0.5 and started["data"]["evidence"]["streak"] == 2
    finally:
        code = trigger.stop()
        kill_fake_runs(trigger.home)
        sink.close()
    assert code == 0, trigger.output()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--signal_rule", "vibes=retrain"], "unknown signal 'vibes'"),
        (["--signal_rule", "quality=maybe"], "signal action 'maybe'"),
        (["--policy_file", "absent.yaml"], "policy file absent.yaml cannot be read"),
    ],
)
def test_a_bad_policy_stops_the_service_at_start(tmp_path, flags, message):
    proc = subprocess.run(
        [sys.executable, "-m", "kfloop.serving.trigger.service", "--port", "0", *flags],
        cwd=tmp_path, env={"KFLOOP_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr

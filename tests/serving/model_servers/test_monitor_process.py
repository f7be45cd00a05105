"""The monitor process (``monitor_process.py``): the transformer's side and a real child process, a
churn bundle with a scipy drift reference, captures to a LocalStore under KFLOOP_HOME."""

from __future__ import annotations

import asyncio
import io
import math
import os
import signal
from pathlib import Path

import pytest

from kfloop.config import Settings
from kfloop.errors import ConfigError
from kfloop.monitoring.capture import read_captures
from kfloop.serving.model_servers.monitor_process import FRAME, MonitorProcess, child_config, frame, read_frame
from kfloop.serving.model_servers.observer import MonitorOptions
from kfloop.store.bundle import load_schema
from kfloop.store.objects import open_store
from kfloop.training.samples import churn
from tests.conftest import wait_for
from tests.fakes.bundles import trained_bundle

pytestmark = pytest.mark.processes  # starts the monitor process

ROWS = 25  # per request
WINDOW = 50


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("monitor")
    return trained_bundle(root, churn(1200, seed=1), 900, {"n_estimators": 10, "max_depth": 3, "nthread": 1}, "scipy")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KFLOOP_HOME", str(tmp_path / "home"))  # the child reads the same settings
    return tmp_path / "home"


@pytest.fixture(scope="module")
def requests(bundle) -> list[tuple[bytes, bytes]]:
    """V1 requests of ROWS rows of held-out churn rows (objects by feature name) and answers to them."""
    import orjson

    names = load_schema(bundle).names
    df = churn(1200, seed=9)
    out = []
    for start in range(0, 400, ROWS):
        rows = df.iloc[start : start + ROWS][names].to_dict("records")
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
        answer = {"predictions": [[0.7, 0.3]] * len(rows)}
        out.append((orjson.dumps({"instances": rows}), orjson.dumps(answer)))
    return out


def monitor(bundle: Path, **options) -> MonitorProcess:
    opts = MonitorOptions(
        drift_window=WINDOW, drift_cpu_share=1.0, capture_flush_seconds=0.2, shutdown_seconds=5, **options
    )
    return MonitorProcess(child_config("churn", str(bundle), "3", opts, None, 1.0))


def send(process: MonitorProcess, requests, first: int = 0) -> None:
    """Send ``requests`` from an event loop, as the transformer does, and let the flushes run."""

    async def go():
        for i, (body, answer) in enumerate(requests, first):
            process.observe("v1", body, answer, f"req-{i}", "3", None, 0, ROWS)
        await asyncio.sleep(0.05)

    asyncio.run(go())


def test_frames_read_back_and_a_cut_frame_ends_the_stream():
    data = frame(["r", "v1", "id-1", 1.5, None, "canary", 2, 1], b'{"instances": [[1]]}', b'{"predictions": [0]}')
    stream = io.BytesIO(data + frame(["s", 7]) + data[: FRAME.size + 3])
    assert read_frame(stream) == (
        ["r", "v1", "id-1", 1.5, None, "canary", 2, 1],
        b'{"instances": [[1]]}',
        b'{"predictions": [0]}',
    )
    assert read_frame(stream) == (["s", 7], b"", b"")
    assert read_frame(stream) is None


def test_the_child_captures_and_checks_what_it_is_sent_and_drains_at_stop(bundle, home, requests):
    process = monitor(bundle)
    info = process.start()
    assert info["backend"] == "scipy" and "captures" in info["capture_location"]
    os.kill(process._process.pid, signal.SIGTERM)  # a process group's SIGTERM: the child keeps going
    send(process, requests[:8])  # 200 rows: 4 windows
    drift, capture, _ = process.parts()
    assert drift.rows_submitted == 8 * ROWS  # every request sent before the counters was queued there
    wait_for(lambda: process.parts()[0].windows_checked == 4, what="four windows checked")
    process.stop(5)
    assert process._process.returncode == 0
    records = read_captures(open_store(Settings.from_env()), "churn")
    assert len(records) == 8 * ROWS
    assert {r["request_id"] for r in records} == {f"req-{i}:{j}" for i in range(8) for j in range(ROWS)}
    import orjson

    first = orjson.loads(requests[0][0])["instances"][0]
    got = next(r for r in records if r["request_id"] == "req-0:0")
    assert got["model_version"] == "3" and got["features"]["contract"] == first["contract"]


def test_requests_over_the_buffer_limit_are_dropped_and_counted(bundle, home, requests):
    process = monitor(bundle, capture_max_buffer=1_000_000)
    process.max_buffer_bytes = 64 * len(requests[0][0])  # a few dozen requests wait at most
    process.start()
    child = process._process.pid
    sent = 0

    async def burst():  # while the child does not read: the pipe fills, then the buffer
        nonlocal sent
        while process.rows_lost == 0:
            body, answer = requests[sent % len(requests)]
            process.observe("v1", body, answer, f"req-{sent}", "3", None, 0, ROWS)
            sent += 1
        for _ in range(10):
            process.observe("v1", body, answer, f"req-{sent}", "3", None, 0, ROWS)
            sent += 1

    os.kill(child, signal.SIGSTOP)
    try:
        asyncio.run(burst())
    finally:
        os.kill(child, signal.SIGCONT)
    assert process.rows_lost >= 10 * ROWS
    drift, capture, _ = process.parts()
    assert drift.rows_dropped == capture.dropped == process.rows_lost
    process.stop(30)
    stored = len(read_captures(open_store(Settings.from_env()), "churn"))
    assert stored + process.rows_lost == sent * ROWS  # every request stored or counted


def test_a_child_that_dies_is_started_again_and_what_came_meanwhile_is_counted(bundle, home, requests):
    process = monitor(bundle)
    process.start()
    first = process._process
    first.kill()
    wait_for(lambda: process._process is None or process._process is not first, what="the child seen gone")
    send(process, requests[:2])  # while it is down (or just restarted)
    wait_for(lambda: process.restarts == 1 and process.parts()[0] is not None, timeout=60, what="a new child")
    lost = process.rows_lost
    send(process, requests[2:6], first=2)
    drift, capture, _ = process.parts()
    assert drift.errors >= 1  # the restart
    assert drift.rows_dropped >= lost
    process.stop(5)
    ids = {r["request_id"].split(":")[0] for r in read_captures(open_store(Settings.from_env()), "churn")}
    assert {"req-2", "req-3", "req-4", "req-5"} <= ids


def test_a_child_that_cannot_load_stops_the_transformer_with_its_reason(home, tmp_path):
    process = MonitorProcess(child_config("churn", str(tmp_path / "nothing"), "3", MonitorOptions(), None, 1.0))
    with pytest.raises(ConfigError, match="monitor process did not start: FileNotFoundError: .*schema.json"):
        process.start(timeout=60)

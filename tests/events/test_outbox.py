"""The durable outbox against a real HTTP sink on 127.0.0.1 that can be taken down and brought back."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kfloop.errors import InvalidRequest
from kfloop.events.cloudevents import DeliveryError, make_event, parse_event, post_event
from kfloop.events.outbox import Outbox
from kfloop.names import outbox_prefix
from kfloop.retry import backoff_delay
from kfloop.store.objects import LocalStore, open_store
from tests.conftest import wait_for

FAST = {"backoff_base": 0.05, "backoff_max": 0.2, "timeout": 2.0, "idle_poll_s": 0.1}


class Sink:
    """A tiny event sink: answers every POST with ``status`` (after ``delay`` seconds) and
    records the events it answered with a 2xx. ``down()`` stops listening; ``up()`` listens
    again on the same port."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.status, self.delay, self.hits = 200, 0.0, 0
        self.accepted: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def ids(self) -> list[str]:
        with self.lock:
            return [json.loads(body)["id"] for _, body in self.accepted]

    def up(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(sink.delay)
                with sink.lock:
                    sink.hits += 1
                    status = sink.status
                    if 200 <= status < 300:
                        sink.accepted.append((dict(self.headers), body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def sink():
    sink = Sink()
    yield sink
    sink.down()


def events(n: int, tag: str = "e") -> list[dict]:
    return [make_event("io.kfloop.drift.detected", "/test", {"n": i}, id=f"{tag}-{i}") for i in range(n)]


def test_append_stores_the_event_on_disk_before_any_delivery(local_settings):
    outbox = Outbox.for_settings(local_settings, "drift", None, **FAST)
    event = events(1)[0]
    path = outbox.append(event)
    outbox.start()  # no sink: nothing to deliver to, events stay
    assert path.parent == local_settings.home / "outbox" / "drift" and json.loads(path.read_bytes()) == event
    assert outbox.depth == 1 and outbox.stats() == {"delivered": 0, "failed_attempts": 0, "dead_letters": 0, "depth": 1}
    with pytest.raises(InvalidRequest, match="'id'"):
        outbox.append({"specversion": "1.0", "source": "s", "type": "t"})
    assert outbox.depth == 1


def test_events_wait_for_a_sink_that_is_down_and_arrive_when_it_is_back(tmp_path, sink):
    outbox = Outbox(tmp_path / "box", sink.url, **FAST)
    outbox.start()
    sent = events(5)
    for event in sent:
        outbox.append(event)
    wait_for(lambda: outbox.failed_attempts >= 3)
    assert outbox.depth == 5 and outbox.delivered == 0
    sink.up()
    assert outbox.drain(5.0)
    assert outbox.stop(5.0)
    assert sink.ids() == [e["id"] for e in sent]  # each once, in order
    assert outbox.delivered == 5 and outbox.depth == 0
    assert [parse_event(headers, body) for headers, body in sink.accepted] == sent


@pytest.mark.parametrize("status", [503, 429, 408])
def test_transient_statuses_are_retried(tmp_path, sink, status):
    sink.status = status
    sink.up()
    outbox = Outbox(tmp_path / "box", sink.url, **FAST)
    outbox.start()
    sent = events(3)
    for event in sent:
        outbox.append(event)
    wait_for(lambda: sink.hits >= 3)
    assert outbox.depth == 3 and outbox.dead_letters == 0 and outbox.failed_attempts >= 2
    sink.status = 202
    assert outbox.drain(5.0)
    outbox.stop()
    assert sink.ids() == [e["id"] for e in sent]


def test_pending_events_survive_a_restart(tmp_path, sink):
    first = Outbox(tmp_path / "box", sink.url, **FAST)
    first.start()
    old = events(4, "old")
    for event in old:
        first.append(event)
    wait_for(lambda: first.failed_attempts >= 1)
    assert first.stop(5.0)
    assert first.depth == 4

    sink.up()
    second = Outbox(tmp_path / "box", sink.url, **FAST)
    new = events(2, "new")
    second.append(new[0])
    second.start()
    second.append(new[1])
    assert second.drain(5.0)
    second.stop()
    assert sink.ids() == [e["id"] for e in old + new]
    assert second.delivered == 6


def test_a_rejected_event_goes_to_dead_letters_and_the_rest_flows(tmp_path, sink):
    sink.status = 400
    sink.up()
    outbox = Outbox(tmp_path / "box", sink.url, **FAST)
    outbox.start()
    bad, good = events(2)
    outbox.append(bad)
    wait_for(lambda: outbox.dead_letters == 1)
    sink.status = 200
    outbox.append(good)
    assert outbox.drain(5.0)
    outbox.stop()
    assert sink.ids() == [good["id"]]
    dead = sorted((tmp_path / "box" / "dead").iterdir())
    assert [json.loads(p.read_bytes()) for p in dead if p.suffix == ".json"] == [bad]
    assert any("HTTP 400" in p.read_text() for p in dead if p.suffix == ".reason")
    assert outbox.stats() == {"delivered": 1, "failed_attempts": 0, "dead_letters": 1, "depth": 0}


def test_append_never_waits_for_a_slow_sink(tmp_path, sink):
    sink.delay = 1.0
    sink.up()
    outbox = Outbox(tmp_path / "box", sink.url, **FAST)
    outbox.start()
    started = time.monotonic()
    for event in events(5):  # waiting for the sink even once would take a second
        outbox.append(event)
    assert time.monotonic() - started < 0.9
    assert outbox.stop(5.0)
    assert outbox.depth >= 4


def test_post_event_reports_status_and_failures(sink):
    event = events(1)[0]
    sink.up()
    assert post_event(sink.url, event, timeout=2.0) == 200
    assert parse_event(*sink.accepted[0]) == event
    for status, permanent in [(500, False), (404, True), (429, False)]:
        sink.status = status
        with pytest.raises(DeliveryError, match=f"HTTP {status}") as info:
            post_event(sink.url, event, timeout=2.0)
        assert info.value.status == status and info.value.permanent is permanent
    sink.down()
    with pytest.raises(DeliveryError, match="cannot reach") as info:
        post_event(sink.url, event, timeout=2.0)
    assert info.value.status is None and not info.value.permanent


def test_backoff_grows_to_its_cap_with_bounded_jitter():
    assert [backoff_delay(n, 0.05, 1.0, jitter=0) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for n in range(1, 100):
        exact = min(1.0, 0.05 * 2 ** (n - 1))
        assert 0.5 * exact <= backoff_delay(n, 0.05, 1.0, jitter=0.5) <= exact


# -- a pod's outbox folder dies with it: what is left goes to the object store -----------------------


def test_a_stopped_pods_undelivered_events_reach_the_sink_from_the_next_pod(tmp_path, sink, s3_settings):
    """Each pod has its own emptyDir; the store (moto S3 here) is shared. A graceful stop while the
    sink is down loses nothing: the next pod of the same name delivers the events, ids unchanged."""
    store = open_store(s3_settings)
    first = Outbox(tmp_path / "pod-1" / "drift-churn-stable", sink.url, spill=store, **FAST)
    first.start()
    sent = events(3, "spill")
    for event in sent:
        first.append(event)
    wait_for(lambda: first.failed_attempts >= 1)  # the sink is down
    assert first.stop(5.0, drain_s=0.3)
    assert (first.depth, first.spilled) == (0, 3)
    assert len(store.list(outbox_prefix("drift-churn-stable"))) == 3

    sink.up()
    second = Outbox(tmp_path / "pod-2" / "drift-churn-stable", sink.url, spill=store, **FAST)
    later = events(1, "later")
    second.start()
    second.append(later[0])
    assert second.drain(5.0)
    second.stop()
    assert second.adopted == 3 and second.spilled == 0
    assert sink.ids() == [e["id"] for e in sent + later]  # in order, the adopted ones first
    assert store.list(outbox_prefix("drift-churn-stable")) == []


def test_a_stop_delivers_what_it_can_before_spilling(tmp_path, sink):
    sink.up()
    store = LocalStore(tmp_path / "store")
    box = Outbox(tmp_path / "pod" / "box", sink.url, spill=store, **FAST)
    box.start()
    for event in events(2, "drained"):
        box.append(event)
    assert box.stop(5.0, drain_s=5.0)
    assert sink.ids() == ["drained-0", "drained-1"] and box.spilled == 0
    assert store.list(outbox_prefix("box")) == []


def test_a_spilled_event_whose_checksum_fails_stays_in_the_store(tmp_path, sink):
    store = LocalStore(tmp_path / "store")
    box = Outbox(tmp_path / "pod-1" / "box", None, spill=store)
    box.append(events(1, "bad")[0])
    box.append(events(1, "good")[0])
    assert box.stop() and box.spilled == 2
    bad, good = sorted(store.list(outbox_prefix("box")))
    store.put(bad, store.get(bad).replace(b"bad-0", b"bad-X"))

    sink.up()
    second = Outbox(tmp_path / "pod-2" / "box", sink.url, spill=store, **FAST)
    second.start()
    assert second.drain(5.0)
    second.stop()
    assert sink.ids() == ["good-0"] and second.adopted == 1
    assert store.list(outbox_prefix("box")) == [bad]  # kept, not lost, not delivered altered

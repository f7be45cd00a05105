"""The mirror state and shadow records on the store (``kfloop.rollout.mirror``): sealed and checked,
validated, and read back into a shadow side's numbers."""

from __future__ import annotations

import orjson
import pytest

from kfloop.errors import ChecksumError, ConfigError
from kfloop.names import mirror_state_key
from kfloop.rollout.mirror import (
    MirrorState,
    ShadowRecords,
    clear_state,
    read_state,
    shadow_record,
    shadow_stats,
    write_records,
    write_state,
)
from kfloop.store.objects import LocalStore


def test_the_mirror_state_round_trips_and_a_damaged_one_is_refused(tmp_path):
    store = LocalStore(tmp_path)
    assert read_state(store, "churn") is None
    write_state(store, MirrorState("churn", 3, 40, "http://churn-shadow-predictor.models.svc.cluster.local"))
    state = read_state(store, "churn")
    assert (state.version, state.percent) == (3, 40) and state.updated
    key = mirror_state_key("churn")
    store.put(key, store.get(key).replace(b'"percent": 40', b'"percent": 90'))
    with pytest.raises(ChecksumError):
        read_state(store, "churn")
    assert clear_state(store, "churn") and not clear_state(store, "churn")


@pytest.mark.parametrize(
    ("version", "percent", "url"),
    [(0, 10, "http://a"), (1, 101, "http://a"), (1, 10, "file:///etc"), (1, 10, "http://a/v1/models"), (1, 10, "")],
)
def test_a_mirror_state_kfloop_cannot_use_is_refused(version, percent, url):
    with pytest.raises(ConfigError, match="mirror state of churn"):
        MirrorState("churn", version, percent, url)


def _record(i: int, status: int = 200, p: float = 0.25, error: bool = False) -> dict:
    shadow = (
        {"version": 2, "error": "UpstreamUnreachable: refused"}
        if error
        else {
            "version": 2,
            "status": status,
            "latency_ms": float(i),
            "response": orjson.dumps({"predictions": [[1 - p, p]]}),
        }
    )
    primary = {"revision": "stable", "version": "1", "status": 200, "response": b'{"predictions":[[0.5,0.5]]}'}
    return shadow_record(
        "churn", f"req-{i}", "/v1/models/churn:predict", b'{"instances":[[1]]}', shadow, primary, 1e9 + i
    )


def test_shadow_records_are_checked_on_read_and_summarised_as_a_side(tmp_path):
    store = LocalStore(tmp_path)
    records = [_record(i) for i in range(1, 9)] + [_record(9, status=503), _record(10, error=True)]
    key = write_records(store, "churn", 2, records)
    read = ShadowRecords(store, "churn").records(2, "2001-09-09T01:46:45.000000Z")  # from the 5th second on
    assert [r["request_id"] for r in read] == [f"req-{i}" for i in range(5, 11)]
    assert read[0]["request"] == {"instances": [[1]]} and read[0]["primary"]["response"]["predictions"] == [[0.5, 0.5]]
    stats = shadow_stats(read)
    assert (stats.requests, stats.errors, stats.p99_ms) == (6, 2, 8.0)
    assert stats.predictions == [[0.75, 0.25]] * 4
    store.put(key, store.get(key) + b"\n")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        ShadowRecords(store, "churn").records(2, "")

"""VersionedDrift: a monitor per answering version, references loaded off the request path, bounded."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from kfloop.errors import ConfigError
from kfloop.events.outbox import Outbox
from kfloop.inference.requests import RequestDecoder
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.drift_monitor import DriftMonitor
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.monitoring.versions import VersionedDrift, VersionReference
from kfloop.schema import infer_schema
from kfloop.training.samples import churn
from tests.conftest import wait_for

WINDOW = 100


@pytest.fixture(scope="module")
def reference():
    df = churn(600, seed=0)
    schema = infer_schema(df, "churn")
    return schema, fit_baseline(schema, schema.encode_frame(df), backend="scipy")


def body(n: int, seed: int, **knobs) -> dict:
    return {"instances": churn(n, seed=seed, **knobs).drop(columns=["churn"]).to_dict(orient="records")}


class Loop:
    """A VersionedDrift whose loader waits for ``release`` and records what it was asked for."""

    def __init__(self, schema, detector, tmp_path, **options):
        self.schema, self.detector, self.asked = schema, detector, []
        self.release, self.missing = threading.Event(), set()
        self.outbox = Outbox(tmp_path / "box", None)
        self.drift = VersionedDrift(schema, self.load, self.monitor, retry_s=0.2, **options)
        self.decoder = RequestDecoder(schema)

    def load(self, version: str) -> VersionReference:
        self.asked.append(version)
        self.release.wait(10)
        if version in self.missing:
            raise FileNotFoundError(f"no version {version}")
        return VersionReference(version, self.schema, self.detector)

    def monitor(self, ref: VersionReference) -> DriftMonitor:
        return DriftMonitor(WindowedDrift(ref.detector, WINDOW), self.outbox, "/t", {"model_version": ref.version})

    def submit(self, version: str, b: dict) -> bool:
        return self.drift.submit(version, self.decoder.decode_v1(b), lambda d: d.decode_v1(b))


def test_rows_of_a_version_not_loaded_yet_are_counted_then_checked_by_its_own_monitor(reference, tmp_path):
    schema, detector = reference
    loop = Loop(schema, detector, tmp_path)
    loop.drift.add(VersionReference("1", schema, detector))
    assert loop.submit("1", body(30, 1))
    assert not loop.submit("2", body(20, 2)) and not loop.submit("2", body(5, 3))
    assert loop.drift.rows_unreferenced == 25
    wait_for(lambda: loop.asked, what="the loader asked for version 2")  # loaded off this thread ...
    assert loop.asked == ["2"]  # ... and asked once, though two requests of version 2 came before it
    loop.release.set()
    wait_for(lambda: loop.drift.versions == ["1", "2"], what="version 2 loaded")
    assert loop.submit("2", body(40, 4))
    wait_for(lambda: loop.drift.rows_checked == 70, what="rows checked")
    assert (loop.drift.monitor("1").rows_checked, loop.drift.monitor("2").rows_checked) == (30, 40)
    assert loop.drift.monitor("2").context["model_version"] == "2"
    assert loop.drift.stop()


def test_at_most_max_versions_are_kept_and_a_retired_ones_counts_stay(reference, tmp_path):
    schema, detector = reference
    loop = Loop(schema, detector, tmp_path, max_versions=2)
    loop.release.set()
    for v in ("1", "2", "3"):
        loop.submit(v, body(5, 0))
        wait_for(lambda v=v: v in loop.drift.versions, what=f"version {v} loaded")
        assert loop.submit(v, body(10, 1))
    wait_for(lambda: loop.drift.rows_checked == 30, what="rows checked")
    assert loop.drift.versions == ["2", "3"] and loop.drift.versions_retired == 1
    assert loop.drift.rows_submitted == 30 and loop.drift.rows_unreferenced == 15
    loop.submit("2", body(1, 0))  # served last: "3" is the least recently served now
    loop.submit("1", body(1, 0))
    wait_for(lambda: "1" in loop.drift.versions, what="version 1 loaded again")
    assert loop.drift.versions == ["2", "1"]
    assert loop.drift.stop()


def test_a_failed_load_is_retried_later_not_on_every_request(reference, tmp_path):
    schema, detector = reference
    loop = Loop(schema, detector, tmp_path)
    loop.missing.add("9")
    loop.release.set()
    loop.submit("9", body(3, 0))
    wait_for(lambda: loop.drift.load_errors == 1, what="failed load")
    loop.submit("9", body(3, 0))
    assert loop.asked == ["9"]  # within retry_s: not asked again
    loop.missing.clear()
    wait_for(lambda: loop.submit("9", body(3, 0)) or "9" in loop.drift.versions, what="retried load")
    assert loop.asked == ["9", "9"]
    assert loop.drift.stop()


def test_a_version_with_another_schema_gets_the_rows_decoded_with_it(reference, tmp_path):
    schema, detector = reference
    contract = next(f for f in schema.features if f.name == "contract")
    other = dataclasses.replace(
        schema,
        features=[
            dataclasses.replace(f, categories=list(reversed(f.categories))) if f is contract else f
            for f in schema.features
        ],
    )
    loop = Loop(schema, detector, tmp_path)
    loop.drift.add(VersionReference("2", other, detector))
    b = body(10, 5)
    assert loop.submit("2", b)
    wait_for(lambda: loop.drift.rows_checked == 10, what="rows checked")
    window = loop.drift.monitor("2").windowed._buffer[:10]
    j = schema.names.index("contract")
    assert window[:, j].tolist() == RequestDecoder(other).decode_v1(b).X[:, j].tolist()
    assert window[:, j].tolist() != RequestDecoder(schema).decode_v1(b).X[:, j].tolist()
    assert loop.drift.stop()


def test_max_versions_must_be_positive(reference):
    schema, _ = reference
    with pytest.raises(ConfigError, match="max_versions must be at least 1, got 0"):
        VersionedDrift(schema, lambda v: None, lambda r: None, max_versions=0)

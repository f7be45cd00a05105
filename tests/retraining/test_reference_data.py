"""The rebaseline policy: a version retrained because the traffic drifted gets a drift reference fitted
on the traffic served since the drift, so its windows on that traffic stop drifting, while a further
shift still drifts. Served through a real DriftMonitor (captures first, as the transformer does)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from kfloop.config import Settings
from kfloop.events.outbox import Outbox
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.drift import load_detector
from kfloop.monitoring.drift_monitor import DriftMonitor
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.names import DRIFT_DETECTED
from kfloop.retraining.inputs import drift_reference, pipeline_arguments
from kfloop.retraining.policy import RetrainPolicy
from kfloop.retraining.reference_data import drift_onset, stored_event
from kfloop.schema import infer_schema
from kfloop.steps.baseline import REFERENCE_FILE, fit_drift_baseline
from kfloop.store import bundle
from kfloop.store.event_log import record_event
from kfloop.store.objects import LocalStore, open_store
from kfloop.store.registry import Registry
from kfloop.timestamps import rfc3339
from kfloop.training import booster
from kfloop.training.samples import churn
from tests.conftest import wait_for

WINDOW, REQUEST_ROWS, WINDOWS_CHECKED = 200, 20, 20


def write_bundle(root: Path, schema) -> Path:
    """A registrable bundle with the churn schema and a small real booster (the baseline step predicts
    with it for the prediction reference of the constraints)."""
    root.mkdir(parents=True)
    model = booster.train(schema, churn(500, seed=5), None, booster.TrainParams(n_estimators=5, nthread=1))
    booster.save_model(model, root / bundle.MODEL_FILE)
    (root / bundle.SCHEMA_FILE).write_text(json.dumps(schema.to_dict()))
    (root / bundle.METRICS_FILE).write_text(json.dumps({"task": "binary", "metrics": {"auc": 0.86}}))
    bundle.write_manifest(root)
    return root


def parquet(frame: pd.DataFrame, path: Path) -> str:
    frame.to_parquet(path, index=False)
    return str(path)


def serve(writer: CaptureWriter, monitor: DriftMonitor, schema, frame: pd.DataFrame) -> None:
    """Requests of REQUEST_ROWS rows, 50 a second: each captured (stamped now), then queued for drift checking."""
    features = frame.drop(columns="churn")
    for start in range(0, len(features), REQUEST_ROWS):
        part = features.iloc[start : start + REQUEST_ROWS]
        rows, X = json.loads(part.to_json(orient="records")), schema.encode_frame(part)
        writer.add([capture_record("churn", "1", row, [0.5, 0.5], time=rfc3339()) for row in rows])
        assert monitor.submit(X)
        time.sleep(0.02)


def drift_rate(detector, schema, age_shift: float, seed: int) -> int:
    """How many of WINDOWS_CHECKED fresh windows of traffic ``age_shift`` years older drift."""
    frame = churn(WINDOW * WINDOWS_CHECKED, seed=seed, age_shift=age_shift).drop(columns="churn")
    X = schema.encode_frame(frame)
    return sum(detector.predict(X[i * WINDOW : (i + 1) * WINDOW])["data"]["is_drift"] for i in range(WINDOWS_CHECKED))


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """v1 trained and baselined on the original data, serving traffic whose customers turn 15 years
    older halfway through window 2; the drift event of window 3 (the second drifted one) starts a run,
    launched after window 4."""
    root = tmp_path_factory.mktemp("rebaseline")
    settings = Settings(home=root / "home")
    store = LocalStore(settings.home)
    original = churn(5000, seed=0)
    schema = infer_schema(original, "churn")
    model_dir = write_bundle(root / "bundle", schema)
    record = Registry(store).register("churn", model_dir)
    fit_drift_baseline(str(model_dir), parquet(original, root / "train1.parquet"), str(root / "v1"), backend="scipy")
    v1 = load_detector(root / "v1")
    outbox = Outbox(root / "outbox", sink_url=None)
    monitor = DriftMonitor(WindowedDrift(v1, WINDOW), outbox, "kfloop/churn", {"model": "churn"}, cpu_share=1)
    half = WINDOW // 2
    phases = [
        churn(2 * WINDOW + half, seed=13),  # windows 0, 1 and the first half of window 2: clean
        churn(2 * WINDOW + half, seed=12, age_shift=15),  # the rest of window 2, windows 3 and 4: drifted
    ]
    with CaptureWriter(store, "churn", batch_size=100_000, flush_interval_s=60) as writer:
        for frame in phases:
            serve(writer, monitor, schema, frame)
        wait_for(lambda: monitor.windows_checked == 5, what="five windows checked")
    assert monitor.stop()
    events = sorted((json.loads(p.read_bytes()) for p in outbox.pending()), key=lambda e: e["time"])
    by_window = {e["data"]["data"]["window_index"]: e for e in events}
    assert sorted(by_window) == [2, 3, 4]  # the mixed window and the two after it drifted
    trigger = by_window[3]
    assert record_event(store, "churn", trigger)
    return {"root": root, "settings": settings, "schema": schema, "model_dir": model_dir, "record": record} | {
        "v1": v1,
        "event": stored_event(store, "churn", trigger["id"]),
        "drifted": phases[1],
    }


def test_a_drift_started_run_gets_the_rows_served_since_its_window(loop):
    event = loop["event"]
    assert event["type"] == DRIFT_DETECTED
    data = drift_reference(loop["settings"], loop["record"], "churn", "kfloop-churn-e1", event, {"source": "s"})
    # windows 3 and 4, and at most one request of window 2 (the capture slack): only drifted rows
    assert 2 * WINDOW <= data["reference_rows"] <= 2 * WINDOW + REQUEST_ROWS
    assert data["reference_since"] == rfc3339(drift_onset(event))
    reference = pd.read_parquet(data["drift_reference"])
    assert list(reference.columns) == loop["schema"].names and len(reference) == data["reference_rows"]
    assert reference["age"].min() >= 18 + 15  # nobody from before the shift
    arguments = pipeline_arguments(RetrainPolicy(), "churn", data)
    assert arguments["drift_reference"] == data["drift_reference"]


def test_runs_not_started_by_drift_keep_the_training_split(loop):
    quality = {**loop["event"], "type": "io.kfloop.quality.degraded"}
    data = {"source": "s"}
    assert drift_reference(loop["settings"], loop["record"], "churn", "run", quality, data) is data
    assert "drift_reference" not in pipeline_arguments(RetrainPolicy(), "churn", data)


def test_too_few_served_rows_leave_the_training_split(loop):
    late = {**loop["event"], "data": {"data": {"window_start": "2999-01-01T00:00:00Z"}}}
    data = drift_reference(loop["settings"], loop["record"], "churn", "run-late", late, {"source": "s"})
    assert data["drift_reference"] is None and data["reference_rows"] == 0
    assert "training split" in data["reference_note"]
    assert "drift_reference" not in pipeline_arguments(RetrainPolicy(), "churn", data)


def test_after_rebaseline_the_same_traffic_does_not_drift_but_a_further_shift_does(loop):
    root, schema, model_dir = loop["root"], loop["schema"], str(loop["model_dir"])
    data = drift_reference(loop["settings"], loop["record"], "churn", "kfloop-churn-e2", loop["event"], {})
    # v2's training data: new original rows plus the labeled drifted rows (strategy combined)
    train2 = parquet(pd.concat([churn(5000, seed=1), loop["drifted"]]), root / "train2.parquet")
    fit_drift_baseline(model_dir, train2, str(root / "v2"), backend="scipy", reference=data["drift_reference"])
    fit_drift_baseline(model_dir, train2, str(root / "v2-train-split"), backend="scipy")
    v2, v2_train_split = load_detector(root / "v2"), load_detector(root / "v2-train-split")
    assert json.loads((root / "v2" / REFERENCE_FILE).read_text()) == {
        "source": Path(data["drift_reference"]).as_uri(),
        "rows": data["reference_rows"],
    }

    assert drift_rate(loop["v1"], schema, 15, seed=21) == WINDOWS_CHECKED  # v1 on the new traffic: always
    assert drift_rate(v2_train_split, schema, 15, seed=21) >= WINDOWS_CHECKED - 2  # the old policy: again
    assert drift_rate(v2, schema, 15, seed=21) <= 2  # rebaselined: quiet on the traffic it was made for
    assert drift_rate(v2, schema, 30, seed=22) >= WINDOWS_CHECKED - 2  # a further shift still drifts


def test_a_reference_without_the_schemas_columns_is_refused(loop, tmp_path):
    from kfloop.errors import DataError

    bad = parquet(pd.DataFrame({"age": [40.0] * 10}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="lacks the schema's feature columns"):
        fit_drift_baseline(str(loop["model_dir"]), bad, str(tmp_path / "det"), backend="scipy", reference=bad)


def test_the_launch_waits_for_the_drifted_windows_captures_to_be_stored(tmp_path):
    """A transformer stores captures in batches (every few seconds): a run launched right after the drift
    event waits until rows served after the window's end are stored, so the window's own rows are in."""
    import datetime as dt
    import threading

    from kfloop.retraining.reference_data import build_reference_data
    from kfloop.timestamps import now

    settings = Settings(home=tmp_path / "home")
    store = open_store(settings)
    frame = churn(300, seed=4).drop(columns=["churn"])
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    since, end = now() - dt.timedelta(seconds=1), now()

    def flush_late():
        time.sleep(1.0)
        with CaptureWriter(store, "churn", batch_size=1000) as writer:
            writer.add([capture_record("churn", "1", row, [0.5, 0.5], time=rfc3339()) for row in rows])

    late = threading.Thread(target=flush_late)
    late.start()
    schema = infer_schema(churn(200, seed=0), "churn")
    data = build_reference_data(settings, "churn", schema, since, tmp_path / "ref.parquet", complete_after=end,
                                now=now() + dt.timedelta(seconds=30))  # fmt: skip
    late.join()
    assert data["reference_rows"] == 300 and data["drift_reference"]
    # without a window end nothing is awaited: what is stored now is what the run gets
    quick = build_reference_data(settings, "churn", schema, end + dt.timedelta(seconds=60), tmp_path / "q.parquet")
    assert quick["reference_rows"] == 0 and quick["drift_reference"] is None

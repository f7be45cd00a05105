"""WindowedQuality and the DriftMonitor that drives it: the data-quality and prediction-drift windows
hold the same rows as the drift windows, across request boundaries; alerting results become
CloudEvents in the outbox; a monitor without a baseline has no such signals."""

from __future__ import annotations

import json

import numpy as np

from kfloop.events.outbox import Outbox
from kfloop.monitoring.capture_rows import unseen_by_row
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.drift_monitor import DriftMonitor
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.monitoring.quality_window import WindowedQuality
from kfloop.training.samples import churn
from tests.conftest import wait_for
from tests.fakes.quality import churn_model, training_frame

WINDOW = 100


def split(decoded, predictions, sizes, unseen_rows=None):
    """One request's rows as several requests of ``sizes`` rows (with their per-row unseen categories)."""
    out, start = [], 0
    for n in sizes:
        rows = unseen_rows[start : start + n] if unseen_rows is not None else {}
        out.append((decoded.X[start : start + n], predictions[start : start + n].tolist(), rows))
        start += n
    return out


def unseen_rows(decoded, model, frame):
    return unseen_by_row(frame.astype(object).to_dict("records"), decoded, model.schema.names)


def test_windows_hold_the_rows_offered_in_order_across_requests():
    model = churn_model()
    clean, clean_p = model.window(WINDOW, seed=31)
    frame = churn(WINDOW, seed=32, contract_shift=1.0, unseen_rate=0.2).drop(columns="churn")
    shifted, shifted_p = model.request(frame)
    shifted_unseen = unseen_rows(shifted, model, frame)
    assert 0 < sum(bool(r) for r in shifted_unseen[:40]) < 40
    windowed = WindowedQuality(model.baseline, WINDOW)
    straddling = (
        np.concatenate([clean.X[95:], shifted.X[:40]]),
        np.concatenate([clean_p[95:], shifted_p[:40]]).tolist(),
        [{}] * 5 + shifted_unseen[:40],
    )
    requests = (
        split(clean, clean_p, [30, 50, 15])
        + [straddling]
        + [(shifted.X[40:], shifted_p[40:].tolist(), shifted_unseen[40:])]
    )
    results = []
    for X, predictions, unseen in requests:
        windowed.offer(len(X), predictions, unseen)
        results += windowed.add(X)
    assert [r.signal for r in results] == ["data_quality", "prediction_drift"] * 2
    first_dq, first_pd, second_dq, second_pd = results
    assert (first_dq.status, first_pd.status) == ("ok", "ok")
    assert first_dq.rows == first_pd.rows == second_dq.rows == WINDOW
    assert second_pd.alerting
    # each unseen value counts in the window of its row: unseen categories, not missing values
    assert {(v["feature"], v["check"]) for v in second_dq.evidence["violations"]} == {
        ("payment_method", "unseen_categories")
    }
    [violation] = second_dq.evidence["violations"]
    assert violation["count"] == sum(bool(r) for r in shifted_unseen)
    assert second_dq.evidence["missing_rates"]["payment_method"] == 0
    assert windowed.windows_checked == 2 and windowed.pending == 0


def test_rows_without_predictions_give_no_prediction_result():
    model = churn_model()
    decoded, predictions = model.window(WINDOW, seed=33)
    windowed = WindowedQuality(model.baseline, WINDOW)
    windowed.offer(60, None, {})
    windowed.offer(40, predictions[60:].tolist(), {})
    results = windowed.add(decoded.X[:60]) + windowed.add(decoded.X[60:])
    assert [r.signal for r in results] == ["data_quality"]
    windowed.offer(WINDOW, predictions.tolist(), {})
    assert [r.signal for r in windowed.add(decoded.X)] == ["data_quality", "prediction_drift"]


def test_rejected_requests_count_in_the_window_that_ends_after_them():
    model = churn_model()
    decoded, predictions = model.window(WINDOW, seed=34)
    rejected = [0]
    windowed = WindowedQuality(model.baseline, WINDOW, lambda: rejected[0])
    rejected[0] = 7
    windowed.offer(WINDOW, predictions.tolist(), {})
    [dq, _] = windowed.add(decoded.X)
    assert dq.evidence["rejected_requests"] == 7 and dq.alerting
    windowed.offer(WINDOW, predictions.tolist(), {})
    [dq, _] = windowed.add(decoded.X)
    assert dq.evidence["rejected_requests"] == 0 and dq.status == "ok"


def test_rejects_after_a_window_s_last_request_go_to_the_next_window_however_late_it_is_checked():
    model = churn_model()
    decoded, predictions = model.window(WINDOW, seed=34)
    rejected = [0]
    windowed = WindowedQuality(model.baseline, WINDOW, lambda: rejected[0])
    windowed.offer(60, predictions[:60].tolist(), {})
    rejected[0] = 2  # between the window's two requests: this window
    windowed.offer(40, predictions[60:].tolist(), {})
    rejected[0] = 5  # after its last request, before the monitor's thread checks it: the next window
    windowed.offer(30, predictions[:30].tolist(), {})
    windowed.offer(70, predictions[30:].tolist(), {})
    [dq, _] = windowed.add(decoded.X)
    assert dq.evidence["rejected_requests"] == 2
    rejected[0] = 9  # after the next window's last request: not in it
    [dq, _] = windowed.add(decoded.X)
    assert dq.evidence["rejected_requests"] == 3


def test_the_monitor_reports_alerting_signals_as_events(tmp_path):
    model = churn_model()
    detector = fit_baseline(model.schema, model.schema.encode_frame(training_frame()), backend="scipy")
    outbox = Outbox(tmp_path / "outbox", sink_url=None)
    context = {"model": "churn", "model_version": "2"}
    monitor = DriftMonitor(
        WindowedDrift(detector, WINDOW),
        outbox,
        "kfloop/churn",
        context,
        cpu_share=1,
        quality=WindowedQuality(model.baseline, WINDOW),
    )
    clean, clean_p = model.window(WINDOW, seed=35)
    broken, broken_p = model.window(WINDOW, seed=36, charges_scale=10.0)
    for X, predictions, unseen in split(clean, clean_p, [40, 60]) + split(broken, broken_p, [100]):
        assert monitor.submit(X, predictions, unseen)
    wait_for(lambda: monitor.rows_checked == 2 * WINDOW)
    assert monitor.stop()
    assert monitor.signal_windows["data_quality", "ok"] == 1
    assert monitor.signal_windows["data_quality", "alert"] == 1
    assert monitor.signal_windows["prediction_drift", "ok"] + monitor.signal_windows["prediction_drift", "alert"] == 2
    assert monitor.violations["out_of_range"] == 2 and monitor.violations["missing_rate"] == 0
    assert monitor.last_signals["data_quality"].alerting
    events = [json.loads(p.read_bytes()) for p in outbox.pending()]
    [violated] = [e for e in events if e["type"] == "io.kfloop.data_quality.violated"]
    assert violated["subject"] == "churn" and violated["source"] == "kfloop/churn"
    data = violated["data"]
    assert data["signal"] == "data_quality" and data["window_index"] == 1 and data["model_version"] == "2"
    assert {v["feature"] for v in data["evidence"]["violations"]} == {"monthly_charges", "total_charges"}


def test_a_monitor_without_a_baseline_has_no_quality_signals(tmp_path):
    model = churn_model()
    detector = fit_baseline(model.schema, model.schema.encode_frame(training_frame()), backend="scipy")
    monitor = DriftMonitor(WindowedDrift(detector, WINDOW), Outbox(tmp_path / "o", sink_url=None), "s", cpu_share=1)
    broken, broken_p = model.window(WINDOW, seed=37, charges_scale=10.0)
    assert monitor.submit(broken.X, broken_p.tolist(), broken.unseen)
    wait_for(lambda: monitor.rows_checked == WINDOW)
    assert monitor.stop()
    assert monitor.windows_checked == 1 and sum(monitor.signal_windows.values()) == 0
    assert monitor.last_signals == {}


def test_answers_of_another_shape_leave_the_data_quality_result():
    model = churn_model()
    decoded, _ = model.window(WINDOW, seed=38)
    windowed = WindowedQuality(model.baseline, WINDOW)
    windowed.offer(WINDOW, [[0.1, 0.2, 0.7]] * WINDOW, {})
    assert [r.signal for r in windowed.add(decoded.X)] == ["data_quality"]

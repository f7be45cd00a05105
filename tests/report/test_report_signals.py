"""Every monitoring signal in the report: the status names the signals that alerted, a table counts each
signal's windows per version, the violated constraints of the last alerting data-quality window, the
calibrated estimate next to the realized quality (the uncalibrated one only for bundles without a
calibrator, labeled so), and signals that were never computed are absent, not zero."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter

import pytest
from PIL import Image

from kfloop.monitoring.estimation import Curve, Estimator
from kfloop.monitoring.signals import SignalResult
from kfloop.monitoring.window_log import WindowLog, read_windows, window_summary
from kfloop.report.data import ModelFacts, gather, live_quality, parse_time, signal_table, version_status
from kfloop.report.page import build_report
from kfloop.schema import FeatureSchema
from kfloop.store import bundle
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.fakes.bundles import SCHEMA, make_bundle
from tests.report.conftest import Page, add_labels, at, traffic_rows, write_captures


@pytest.fixture(scope="module")
def page(loop_store) -> Page:
    return Page(build_report(loop_store, "churn"))


def test_the_signals_table_counts_every_stored_windows_results(loop_store, page):
    header, *rows = page.tables["signals-table"]
    assert header == ["signal", "version", "windows ok", "alert", "too few rows", "last verdict"]
    summaries = read_windows(loop_store, "churn")
    expected = Counter((s["signal"], f"v{w['model_version']}", s["status"]) for w in summaries for s in w["signals"])
    shown = {(r[0], r[1]): (int(r[2]), int(r[3]), int(r[4])) for r in rows}
    assert shown == {
        (signal, version): tuple(expected[(signal, version, status)] for status in ("ok", "alert", "insufficient"))
        for signal, version, _ in expected
    }
    assert shown[("data_quality", "v1")] == (6, 4) + (0,)  # tenure leaves the training range in hour 2
    assert shown[("prediction_drift", "v1")] == (6, 4, 0)  # and v1 answers less sure there
    assert shown[("data_quality", "v2")] == (0, 0, 3)  # windows of 24 rows: no verdict
    assert [r[0] for r in rows] == ["feature_drift"] * 2 + ["data_quality"] * 2 + ["prediction_drift"] * 2
    last = {(r[0], r[1]): r[5] for r in rows}
    assert last[("data_quality", "v1")] == "alert 1 (alerts > 0)" and last[("data_quality", "v2")] == "-"
    assert re.fullmatch(r"ok [0-9.e-]+ \(alerts < 0\.025\)", last[("feature_drift", "v2")])
    text = " ".join(page.text)
    assert "data_quality v2, 3 windows: 24 rows in the window; the constraints need at least 50" in text


def colours_of(page: Page, id_: str) -> dict[tuple, int]:
    [img] = [img for img in page.images if img["id"] == id_]
    data = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    return {colour: n for n, colour in rgb.getcolors(maxcolors=1_000_000)}


def rgb(hex_colour: str) -> tuple:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def test_the_signal_chart_marks_each_windows_result(page):
    from kfloop.report.plots import SIGNAL_COLOURS

    colours = colours_of(page, "plot-signals")
    square = 25  # pixels of one mark at least (s=30 points at 96 dpi), a legend's mark included
    ok, alert, too_few = (colours.get(rgb(SIGNAL_COLOURS[s]), 0) for s in ("ok", "alert", "insufficient"))
    assert ok > 21 * square and alert > 12 * square and too_few > 6 * square  # 21 ok, 12 alerts, 6 too few
    assert ok > alert > too_few


def test_the_violated_constraints_of_the_last_alerting_data_quality_window(loop_store, page):
    header, *rows = page.tables["violations-table-1"]
    assert header == ["feature", "check", "rows", "share", "tolerated share", "details"]
    last = [w for w in read_windows(loop_store, "churn", "1") if w["signals"][1]["status"] == "alert"][-1]
    [violation] = last["signals"][1]["evidence"]["violations"]
    assert rows == [
        [
            "tenure",
            "out of range",
            str(violation["count"]),
            f"{violation['share']:.4g}",
            "0.01",
            f"training range 0 to 34; window {violation['window_min']:g} to 69 (0 below, {violation['above']} above)",
        ]
    ]
    assert violation["count"] > 30  # 20-69 against 0-34
    assert f"v1, window {last['window_index']} (" in " ".join(page.text)
    assert "violations-table-2" not in page.tables  # v2 never had a verdict


def test_the_status_names_the_signals_that_alerted_in_the_last_windows(page):
    header, *rows = page.tables["status-table"]
    by_version = {r[0]: dict(zip(header, r)) for r in rows}
    alerting = by_version["v1"]["signals alerting"]
    assert "data_quality 4 of 5: tenure out of range" in alerting
    assert "prediction_drift 4 of 5: output 1" in alerting
    assert by_version["v2"]["signals alerting"] == "-"


def result(signal: str, status: str, **fields) -> dict:
    reason = "too few rows" if status == "insufficient" else ""
    return SignalResult(signal, status, reason=reason, **fields).to_dict()


def window(version: str, minute: int, *signals: dict) -> dict:
    when = parse_time(at(minute))
    return {"time": when, "start": when, "version": version, "window_index": minute, "window_size": 100} | {
        "is_drift": False,
        "threshold": 0.05,
        "p_values": {"age": 0.5},
        "signals": list(signals),
    }


def test_status_data_issues_and_prediction_drift_and_a_lone_alert_only_named():
    violated = {"violations": [{"feature": "age", "check": "missing_rate", "count": 9, "share": 0.09, "limit": 0.05}]}
    dq_alert = result("data_quality", "alert", value=1.0, threshold=0.0, direction="above", evidence=violated)
    dq_ok = result("data_quality", "ok", value=0.0, threshold=0.0, direction="above")
    pd_alert = result("prediction_drift", "alert", value=1e-5, threshold=0.01, evidence={"drifted_outputs": ["1"]})
    windows = [window("1", k, dq_ok) for k in range(3)] + [window("1", 3, dq_alert), window("1", 4, dq_alert)]
    windows += [window("2", 5, pd_alert), window("2", 6, result("prediction_drift", "insufficient"))]
    windows += [window("3", 7, dq_alert)] + [window("3", k, dq_ok) for k in range(8, 12)]  # one early alert
    windows += [window("4", 12, result("data_quality", "insufficient"))]
    status = {r["version"]: r for r in version_status(ModelFacts("churn", [], [], []), windows)}
    assert {v: r["status"] for v, r in status.items()} == {
        "1": "data issues",  # 2 of its last 5 and the last one
        "2": "drifting",  # its last verdict: an insufficient window is no verdict
        "3": "healthy",  # 1 of 5, not the last
        "4": "healthy",
    }
    assert status["1"]["alerts"] == [
        {"signal": "data_quality", "alerts": 2, "verdicts": 5, "sustained": True, "detail": "age missing rate up"}
    ]
    assert [(a["signal"], a["sustained"], a["detail"]) for a in status["3"]["alerts"]] == [
        ("data_quality", False, "age missing rate up")
    ]
    assert status["2"]["alerts"][0]["detail"] == "output 1" and status["4"]["alerts"] == []
    counts = {(r["signal"], r["version"]): (r["ok"], r["alert"], r["insufficient"]) for r in signal_table(windows)}
    assert counts == {
        ("data_quality", "1"): (3, 2, 0),
        ("data_quality", "3"): (4, 1, 0),
        ("data_quality", "4"): (0, 0, 1),
        ("prediction_drift", "2"): (0, 1, 1),
    }


def test_signals_never_computed_are_absent_not_zero(tmp_path):
    """An older bundle without baseline constraints: its windows hold feature drift only."""
    store = LocalStore(tmp_path / "home")
    Registry(store).register("churn", make_bundle(tmp_path / "b", 0.9))
    log = WindowLog(store)
    for k in range(3):
        data = {"is_drift": 0, "threshold": 0.025, "p_val_by_feature": {"tenure": 0.4, "plan": 0.6}}
        data |= {"window_index": k, "window_size": 50, "window_start": at(k), "window_end": at(k + 0.5)}
        log.add(window_summary({"data": data}, {"model": "churn", "model_version": "1"}))
    assert log.flush()
    page = Page(build_report(store, "churn"))
    header, *rows = page.tables["signals-table"]
    assert rows == [["feature_drift", "v1", "3", "0", "0", "ok 0.4 (alerts < 0.025)"]]
    text = " ".join(page.text)
    assert "data_quality" not in text and "prediction_drift" not in text and "Violated constraints" not in text
    assert page.tables["status-table"][1][5] == "-"
    from kfloop.report.plots import SIGNAL_COLOURS

    colours = colours_of(page, "plot-signals")
    assert colours.get(rgb(SIGNAL_COLOURS["ok"]), 0) > 3 * 25
    for status in ("alert", "insufficient"):  # no mark (a few anti-aliased pixels of text may match)
        assert colours.get(rgb(SIGNAL_COLOURS[status]), 0) < 25, status


def test_a_store_of_drift_events_only_has_no_signal_results(tmp_path):
    from kfloop.names import DRIFT_DETECTED
    from tests.report.conftest import drift_data, record

    store = LocalStore(tmp_path / "home")
    record(store, "churn", DRIFT_DETECTED, "/x", drift_data(0, 0.001, 0.5), 1)
    page = Page(build_report(store, "churn"))
    assert "signals-table" not in page.tables and "No window summary holds signal results." in " ".join(page.text)


def test_the_calibrated_estimate_next_to_the_realized_quality(loop_store, page):
    quality = live_quality(loop_store, gather(loop_store, "churn"))
    assert quality["calibrated"] == ["2"]  # v1's bundle is older: no calibrator
    assert {name for name in quality["series"] if "estimated" in name} == {
        "v2 estimated (calibrated)",
        "v1 estimated (uncalibrated)",
    }
    [estimate] = quality["estimates"]
    from kfloop.monitoring.estimation import estimate_vs_realized
    from kfloop.monitoring.feedback import labeled_frame
    from kfloop.report.data import load_bundle_estimator

    record = Registry(loop_store).get("churn", 2)
    labeled = labeled_frame(loop_store, "churn", FeatureSchema.from_dict(record.schema), version="2")
    direct = estimate_vs_realized(load_bundle_estimator(loop_store, record), labeled, quality["window"])
    assert [estimate] == direct  # what the estimation module says, realized metrics included
    realized = estimate["realized"]["accuracy"]
    measured = next(r for r in quality["rows"] if r["model_version"] == "2")
    assert realized == pytest.approx(measured["accuracy"]) and estimate["n"] == measured["n"]
    # the captures say 0.8 (uncalibrated: 0.8); the calibrator learned those are right 90% of the time
    assert abs(estimate["estimated"]["accuracy"] - realized) < 0.02 < abs(0.8 - realized)
    header, *rows = page.tables["estimate-table"]
    assert header[-3:] == ["estimated accuracy", "realized accuracy", "estimate - realized"]
    assert [r[0] for r in rows] == ["v2"]
    assert float(rows[0][4]) == pytest.approx(estimate["estimated"]["accuracy"], abs=1e-4)
    text = " ".join(page.text)
    assert "Calibrated estimate: v2." in text
    assert "Uncalibrated estimate (mean confidence; the bundle has no calibrator): v1." in text


def calibrated_store(tmp_path, schema: dict, labels: bool = True) -> tuple[LocalStore, Registry]:
    """A store with one version whose calibrator was fitted for ``schema``, with (labeled) captures."""
    root = make_bundle(tmp_path / "b", 0.9)
    curve = Curve((0.2, 0.8), (0.1, 0.9))
    Estimator(FeatureSchema.from_dict(schema), {"estimated_accuracy": 0.9}, curves={"1": curve}).save(root)
    bundle.write_manifest(root)
    store = LocalStore(tmp_path / "home")
    registry = Registry(store)
    registry.register("churn", root)
    rows = [(when, "1", "stable") for when, _, _ in traffic_rows()[:300]]
    write_captures(store, "churn", rows)
    if labels:
        add_labels(store, rows)
    return store, registry


def test_before_labels_a_calibrated_version_gets_the_calibrated_estimate_of_its_captures(tmp_path):
    store, _ = calibrated_store(tmp_path, SCHEMA, labels=False)
    quality = live_quality(store, gather(store, "churn"))
    assert quality["rows"] == [] and quality["estimates"] == [] and quality["note"] == "No labels yet."
    [(name, points)] = quality["series"].items()
    assert name == "v1 estimated (calibrated)" and len(points) == 300 // 30  # windows of 30 captures
    assert [round(v, 6) for _, v in points] == [0.9] * 10  # the curve maps the captured 0.8 to 0.9
    assert [t for t, _ in points] == sorted(t for t, _ in points)
    page = Page(build_report(store, "churn"))
    assert "plot-quality" in {img["id"] for img in page.images} and "Calibrated estimate: v1." in " ".join(page.text)


def test_a_calibrator_for_another_schema_is_not_used_and_the_report_says_why(tmp_path):
    other = json.loads(json.dumps(SCHEMA))
    other["features"][0]["name"] = "age"
    store, _ = calibrated_store(tmp_path, other)
    quality = live_quality(store, gather(store, "churn"))
    assert quality["calibrated"] == [] and quality["estimates"] == []
    assert "v1's calibrator is not used" in quality["note"] and "does not match the model's schema" in quality["note"]
    assert "v1 estimated (uncalibrated)" in quality["series"]  # the fallback, labeled so
    page = Page(build_report(store, "churn"))
    assert "estimate-table" not in page.tables and "v1's calibrator is not used" in " ".join(page.text)


def test_a_changed_calibrator_in_the_store_is_refused(tmp_path):
    store, registry = calibrated_store(tmp_path, SCHEMA)
    assert live_quality(store, gather(store, "churn"))["calibrated"] == ["1"]  # as registered, it is used
    path = store.root / registry.get("churn", 1).bundle_key / bundle.CALIBRATION_FILE
    path.write_text(path.read_text().replace("0.9", "0.99"))
    quality = live_quality(store, gather(store, "churn"))
    assert quality["calibrated"] == [] and "does not match the version record" in quality["note"]


def test_hostile_or_malformed_signal_results_are_escaped_or_left_out(tmp_path):
    store = LocalStore(tmp_path / "home")
    attack = "<b>x</b>"
    data = {"is_drift": 0, "threshold": 0.025, "p_val_by_feature": {"tenure": 0.4}, "window_index": 0}
    data |= {"window_size": 60, "window_start": at(0), "window_end": at(1)}
    summary = window_summary({"data": data}, {"model": "churn", "model_version": attack})
    violation = {"feature": attack, "check": attack, "count": attack, "share": 0.5, "limit": 0.01}
    summary["signals"] += [
        {"signal": attack, "status": "alert"},  # no such signal
        {"signal": "prediction_drift", "status": attack},  # no such status
        "not a result",
        {"signal": "data_quality", "status": "alert", "rows": 60, "evidence": {"violations": [violation, 7]}},
        {"signal": "prediction_drift", "status": "alert", "evidence": {"drifted_outputs": [attack]}},
        {"signal": "data_quality", "status": "insufficient", "reason": attack},  # a second result: not counted
    ]
    log = WindowLog(store)
    log.add(summary)
    data |= {"window_index": 1, "window_start": at(1), "window_end": at(2)}
    later = window_summary({"data": data}, {"model": "churn", "model_version": attack})
    later["signals"] += [
        {"signal": "data_quality", "status": "insufficient", "reason": attack, "evidence": []},
        {"signal": "prediction_drift", "status": "alert", "value": "NaN", "evidence": {"drifted_outputs": 5}},
    ]
    log.add(later)
    assert log.flush()
    page = Page(build_report(store, "churn"))
    assert not [tag for tag, _ in page.tags if tag == "b"]
    header, *rows = page.tables["signals-table"]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        ("feature_drift", "2", "0", "0"),
        ("data_quality", "0", "1", "1"),
        ("prediction_drift", "0", "2", "0"),
    ]
    assert rows[2][5] == "alert - (alerts < -)"  # a value that is not a number shows as missing
    [violations] = [t for name, t in page.tables.items() if name.startswith("violations-table-")]
    assert violations[1:] == [[attack, attack, attack, "0.5", "0.01", ""]]  # the entry 7 is no check
    alerting = dict(zip(page.tables["status-table"][0], page.tables["status-table"][1]))["signals alerting"]
    assert f"data_quality 1 of 1: {attack} {attack}" in alerting
    assert alerting.endswith("prediction_drift 2 of 2")  # its last alert names no outputs (5 is not a list)
    assert f"data_quality v{attack}, 1 window: {attack}" in " ".join(page.text)


def test_a_regressors_dle_estimate_before_and_after_labels(tmp_path):
    """A real regressor with its residual models (DLE): the estimated RMSE of its captured windows
    before labels arrive, then of each labeled window next to the realized RMSE."""
    import numpy as np

    from kfloop.monitoring.capture import CaptureWriter, capture_record
    from kfloop.monitoring.estimation import fit_estimator
    from kfloop.monitoring.feedback import FeedbackStore
    from kfloop.training.booster import predict
    from tests.fakes.bundles import build_bundle, churn_frame

    df = churn_frame(1400, seed=3).drop(columns=["churned"])
    df["spend"] = 3.0 * df["tenure"] + (df["plan"] == "basic") * 20 + np.random.default_rng(3).normal(0, 8, len(df))
    train, valid, served = df.iloc[:800], df.iloc[800:1100], df.iloc[1100:]
    root, schema, booster = build_bundle(tmp_path / "b", train.reset_index(drop=True), "spend", "regression")
    fit_estimator(booster, schema, valid.reset_index(drop=True)).save(root)
    bundle.write_manifest(root)
    store = LocalStore(tmp_path / "home")
    Registry(store).register("spend", root)
    values = predict(booster, schema, schema.encode_frame(served)).tolist()
    rows = []
    for i, ((_, row), value) in enumerate(zip(served.iterrows(), values)):
        features = {k: (None if v != v else v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        features.pop("spend")
        rows.append(capture_record("spend", "1", features, value, request_id=f"r{i}:0", time=at(i / 6)))
    with CaptureWriter(store, "spend", batch_size=10_000, flush_interval_s=60) as writer:
        writer.add(rows)
    before = live_quality(store, gather(store, "spend"))
    assert before["metric"] == "rmse" and before["calibrated"] == ["1"] and before["estimates"] == []
    [(name, points)] = before["series"].items()
    assert name == "v1 estimated (calibrated)" and len(points) == 10 and all(4 < v < 20 for _, v in points)
    labels = [{"request_id": f"r{i}:0", "label": float(y)} for i, y in enumerate(served["spend"])]
    FeedbackStore(store).add("spend", schema, labels)
    after = live_quality(store, gather(store, "spend"))
    assert len(after["estimates"]) == len(after["rows"]) == 10
    for estimate, measured in zip(after["estimates"], after["rows"]):
        assert estimate["realized"]["rmse"] == pytest.approx(measured["rmse"])
        assert set(estimate["estimated"]) == {"mae", "rmse"}
    estimated = np.mean([e["estimated"]["rmse"] for e in after["estimates"]])
    realized = np.mean([e["realized"]["rmse"] for e in after["estimates"]])
    assert abs(estimated - realized) < 0.2 * realized  # no shift: the residual model knows the error
    page = Page(build_report(store, "spend"))
    header, *table_rows = page.tables["estimate-table"]
    assert header[-3:] == ["estimated rmse", "realized rmse", "estimate - realized"] and len(table_rows) == 10


def test_captured_predictions_the_calibrator_cannot_read_give_a_note_not_an_error(tmp_path):
    from kfloop.monitoring.capture import CaptureWriter, capture_record

    store, _ = calibrated_store(tmp_path, SCHEMA, labels=False)
    with CaptureWriter(store, "churn", batch_size=10_000, flush_interval_s=60) as writer:
        writer.add(
            [capture_record("churn", "1", {"tenure": 3, "plan": "basic"}, "high", time=at(1.05))]
        )  # in the first window
    quality = live_quality(store, gather(store, "churn"))
    assert "No calibrated estimate of v1's captures: captured predictions are not rows" in quality["note"]
    assert Page(build_report(store, "churn")).headings[1] == "Model churn"

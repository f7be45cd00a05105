"""The demo's timeline texts for the drift reference of a retraining run and the windows checked."""

from __future__ import annotations

from kfloop.demo.events import run_started_text, windows_text


def test_the_run_started_line_names_the_drift_reference():
    data = {"reason": "drift in 2 consecutive windows", "strategy": "combined"}
    rows = {"original_rows": 5000, "captured_rows": 440, "drift_reference": "/x-reference.parquet"}
    text = run_started_text(data, {**rows, "reference_rows": 260})
    assert text == (
        "retraining run started (drift in 2 consecutive windows; combined data: 5000 original + 440 labeled "
        "served rows; drift reference: the 260 rows served since the drifted window began)"
    )
    fallback = run_started_text(data, {"drift_reference": None, "reference_note": "only 3 served rows since T"})
    assert fallback.endswith("combined data; drift reference: only 3 served rows since T)")
    assert "drift reference" not in run_started_text(data, {})


def test_windows_are_counted_per_version_in_version_order():
    summaries = [{"model_version": "10", "is_drift": False}] + [
        {"model_version": str(v), "is_drift": d} for v, d in [(1, True), (1, True), (1, False), (2, False), (2, True)]
    ]
    assert windows_text(summaries) == (
        "drift windows checked: v1 3 (2 drifted, 66.7%), v2 2 (1 drifted, 50.0%), v10 1 (0 drifted, 0.0%)"
    )
    assert windows_text([]) == "drift windows checked: none recorded"

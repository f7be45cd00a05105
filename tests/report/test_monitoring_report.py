"""The monitoring job's report: what it says per signal, absent signals left out, folded windows, a chart
per signal, and every text from the data escaped."""

from __future__ import annotations

import base64
import io
import re

import pandas as pd
from PIL import Image

from kfloop.monitoring.job import JobOptions, JobResult, Window, WindowResult
from kfloop.monitoring.signals import SignalResult
from kfloop.report.monitoring import job_html, job_markdown

NO_LABELS = pd.DataFrame(columns=["request_id"])


def doc(results_per_window: list[dict[str, SignalResult]], rows: int = 500, pooled: bool = False) -> dict:
    windows = []
    for i, results in enumerate(results_per_window):
        records = [{"request_id": f"r{i}-{j}", "time": f"2026-05-01T0{i}:00:00Z"} for j in range(rows)]
        windows.append(WindowResult(Window("churn", "2", i, records, NO_LABELS, pooled), results))
    return JobResult("churn", "2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", JobOptions(), windows).to_dict()


def drift(status: str, p: float) -> SignalResult:
    evidence = {"drifted": ["age"] if status == "alert" else [], "p_val_by_feature": {"age": p}}
    return SignalResult("feature_drift", status, value=p, threshold=0.01, rows=500, evidence=evidence)


def test_alerts_counts_and_windows_with_absent_signals_left_out():
    quality = SignalResult("quality", "alert", 0.61, 0.7, rows=80, evidence={"metric": "accuracy", "note": "<b>x</b>"})
    few = SignalResult("estimated_quality", "insufficient", rows=12, reason="the window has 12 rows")
    report = doc([{"feature_drift": drift("ok", 0.4)}, {"feature_drift": drift("alert", 0.0), "quality": quality}])
    report["windows"][0]["signals"].append(few.to_dict())
    report["counts"]["estimated_quality"] = {"ok": 0, "alert": 0, "insufficient": 1}
    markdown = job_markdown(report)
    assert "2 windows of version 2 checked: 2 alerts." in markdown
    assert "| feature_drift | 1 | 1 | 0 |" in markdown and "| quality | 0 | 1 | 0 |" in markdown
    assert "| feature_drift | 2 | 1 | 500 |" in markdown and "age p=0" in markdown
    assert "estimated_quality: the window has 12 rows (windows 2/0)" in markdown
    assert "bias_drift" not in markdown and "multivariate_drift" not in markdown  # absent, not zero
    page = job_html(report)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<details><summary>Every window (2)</summary>" in page
    images = re.findall(r"<img id='plot-(\w+)' alt='[^']*' src='data:image/png;base64,([^']+)'>", page)
    assert [name for name, _ in images] == ["feature_drift", "quality"]
    width, height = Image.open(io.BytesIO(base64.b64decode(images[0][1]))).size
    assert width > 2 * height  # a strip chart, readable in KFP's artifact pane


def test_a_pooled_low_traffic_window_and_an_empty_range_say_so():
    pooled = doc([{"feature_drift": drift("ok", 0.3)}], rows=120, pooled=True)
    assert "the whole range is one pooled window" in job_markdown(pooled)
    empty = doc([])
    assert "No captured rows in this range: nothing was checked." in job_markdown(empty)
    assert "<h2>Signals</h2>" not in job_html(empty)

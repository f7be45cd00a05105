"""Prometheus metrics of the drift transformer, beside KServe's own on the server's ``/metrics``.

Counted as they happen: inference requests and error answers by HTTP status (``RequestCounter``,
an ASGI middleware, so answers KServe gives before the model runs, such as malformed JSON, are
counted too), the predictor's error answers by status, and mirrored requests (``MIRRORED``, shadow
traffic: ``serving/model_servers/mirror.py``) by candidate version and result. Read when scraped
(``TransformerCollector``): predictor calls and the V1 requests answered through them (coalesced
forwarding, ``forward_batching.py``), drift windows checked, drifted windows, the last p-value per feature,
drift rows dropped and skipped, capture records written and dropped, and the outbox's depth and deliveries;
with baseline constraints, the data-quality and prediction-drift windows by status, the violated
data-quality checks by kind, and the last window's prediction-drift p-value and violation count.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REQUESTS = Counter("kfloop_transformer_requests", "Inference requests answered, by HTTP status", ["model_name", "code"])
ERRORS = Counter(
    "kfloop_transformer_errors", "Inference requests answered with an error, by HTTP status", ["model_name", "code"]
)
PREDICTOR_ERRORS = Counter(
    "kfloop_transformer_predictor_errors",
    "Error answers from the predictor (or unreachable/timeout), by the status sent on",
    ["model_name", "code"],
)
MIRRORED = Counter(  # serving/model_servers/mirror.py
    "kfloop_transformer_mirrored",
    "Requests mirrored to a shadow candidate, by its version and result (mirrored, failed, dropped)",
    ["model_name", "version", "result"],
)
_INFER_PATH = re.compile(r"^/v1/models/(?P<v1>[^/:]+):predict$|^/v2/models/(?P<v2>[^/]+)(/versions/[^/]+)?/infer$")


class RequestCounter:
    """ASGI middleware counting inference answers in ``REQUESTS`` and ``ERRORS`` by status."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        match = _INFER_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            return await self.app(scope, receive, send)
        status = 500  # an exception that escapes every handler ends as 500

        async def send_counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            model, code = match["v1"] or match["v2"], str(status)
            REQUESTS.labels(model, code).inc()
            if status >= 400:
                ERRORS.labels(model, code).inc()


class TransformerCollector:
    """Reads the drift monitor, capture writer and outbox of a transformer at scrape time."""

    def __init__(self, model_name: str, parts: Callable[[], tuple]):
        """``parts()`` returns ``(monitor, capture, outbox, coalescer)``; any may be None before ``load``
        (the coalescer is None when coalesced forwarding is off)."""
        self.model_name, self.parts = model_name, parts

    def collect(self):
        monitor, capture, outbox, coalescer = self.parts()
        labels = [self.model_name]
        if coalescer is not None:
            yield _counter(
                "kfloop_transformer_predictor_calls",
                "Calls to the predictor for V1 requests (concurrent ones combined: forward_batching.py)",
                labels,
                coalescer.calls,
            )
            yield _counter(
                "kfloop_transformer_coalesced_requests",
                "V1 requests answered through those calls",
                labels,
                coalescer.requests,
            )
        if monitor is not None:
            yield _counter("kfloop_drift_windows_checked", "Drift windows checked", labels, monitor.windows_checked)
            yield _counter("kfloop_drift_detected", "Drift windows with drift", labels, monitor.drift_detected)
            yield _counter(
                "kfloop_drift_rows_dropped",
                "Served rows not checked for drift (queue full)",
                labels,
                monitor.rows_dropped,
            )
            yield _counter(
                "kfloop_drift_rows_skipped",
                "Served rows not checked for drift (served while the monitor rested, --drift_cpu_share)",
                labels,
                monitor.rows_skipped,
            )
            yield _counter(
                "kfloop_drift_check_cpu_seconds",
                "CPU the drift thread used checking windows (what --drift_cpu_share bounds)",
                labels,
                monitor.check_cpu_s,
            )
            yield _counter("kfloop_drift_errors", "Drift checks or event writes that failed", labels, monitor.errors)
            yield _counter(
                "kfloop_drift_rows_submitted", "Served rows queued for drift detection", labels, monitor.rows_submitted
            )
            yield _counter(
                "kfloop_drift_rows_checked", "Served rows through drift detection", labels, monitor.rows_checked
            )
            yield _counter(
                "kfloop_drift_rows_unreferenced",
                "Served rows not checked for drift (their version's drift reference not loaded, or not loadable)",
                labels,
                getattr(monitor, "rows_unreferenced", 0),
            )
            yield _gauge(
                "kfloop_drift_versions",
                "Answering model versions drift-checked now, each against its own reference",
                labels,
                len(getattr(monitor, "versions", ())),
            )
            yield _gauge("kfloop_drift_queue_rows", "Rows waiting for the drift thread", labels, monitor.pending_rows)
            yield _gauge(
                "kfloop_drift_window_rows",
                "Rows in the current, not yet full, drift window",
                labels,
                monitor.window_rows,
            )
            p_values = GaugeMetricFamily(
                "kfloop_drift_p_value", "p-value per feature in the last drift window", labels=["model_name", "feature"]
            )
            for feature, p in monitor.last_p_values.items():
                p_values.add_metric([self.model_name, feature], float("nan") if p is None else p)
            yield p_values
            yield from _signal_metrics(self.model_name, monitor)
        if capture is not None:
            yield _counter("kfloop_capture_records_written", "Capture records stored", labels, capture.written)
            yield _counter(
                "kfloop_capture_records_dropped",
                "Capture records dropped (buffer full or store down)",
                labels,
                capture.dropped,
            )
            yield _counter("kfloop_capture_write_errors", "Failed capture store calls", labels, capture.write_errors)
            yield _gauge("kfloop_capture_pending", "Capture records buffered or being written", labels, capture.pending)
        if outbox is not None:
            yield _gauge("kfloop_outbox_depth", "Events waiting for delivery", labels, outbox.depth)
            yield _counter("kfloop_outbox_delivered", "Events delivered to the sink", labels, outbox.delivered)
            yield _counter(
                "kfloop_outbox_dead_letters", "Events the sink rejected permanently", labels, outbox.dead_letters
            )


def _signal_metrics(model_name: str, monitor):
    """The data-quality and prediction-drift families (empty for a monitor without them)."""
    windows = getattr(monitor, "signal_windows", None)
    if not windows:  # no version with baseline constraints: the signals are absent, not zero
        return
    for signal, doc in (
        ("data_quality", "Windows checked against the baseline constraints, by result (ok, alert, insufficient)"),
        ("prediction_drift", "Windows whose predictions were compared with training's, by result"),
    ):
        family = CounterMetricFamily(f"kfloop_{signal}_windows", doc, labels=["model_name", "status"])
        for (name, status), count in sorted(windows.items()):
            if name == signal:
                family.add_metric([model_name, status], count)
        yield family
    violations = CounterMetricFamily(
        "kfloop_data_quality_violations",
        "Violated data-quality checks, by kind (missing_rate, out_of_range, unseen_categories, rejected_requests)",
        labels=["model_name", "check"],
    )
    for check, count in sorted(monitor.violations.items()):
        violations.add_metric([model_name, check], count)
    yield violations
    last = monitor.last_signals
    if (dq := last.get("data_quality")) is not None and dq.value is not None:
        yield _gauge(
            "kfloop_data_quality_last_violations", "Violated checks in the last checked window", [model_name], dq.value
        )
    if (pd := last.get("prediction_drift")) is not None and pd.value is not None:
        yield _gauge(
            "kfloop_prediction_drift_p_value",
            "Smallest corrected KS p-value of the predictions in the last checked window",
            [model_name],
            pd.value,
        )


def register_collector(collector: TransformerCollector) -> None:
    REGISTRY.register(collector)


def _counter(name: str, doc: str, labels: list[str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["model_name"])
    family.add_metric(labels, value)
    return family


def _gauge(name: str, doc: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["model_name"])
    family.add_metric(labels, value)
    return family

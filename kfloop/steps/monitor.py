"""The monitoring step: the scheduled job over a model's captures (``kfloop.monitoring.job``), its
report and its events.

For each version of the model with captured rows in ``[since, until)``: its verified bundle gives the
schema and the drift baseline, its registry record the quality thresholds (``quality_threshold``, else
``quality_margin`` off the version's test metric, as the trigger's quality check derives it; the same
for the estimated accuracy), the feedback store the labels. The report is written as Markdown and HTML
(``kfloop.report.monitoring``), the summary as JSON, and every alert as the CloudEvent the live path
emits, through the durable outbox ``<KFLOOP_HOME>/outbox/monitor`` to ``sink_url`` (Knative's
``K_SINK`` on a cluster, the trigger's URL on this machine); without a sink they stay in the outbox.

``since`` and ``until`` are RFC 3339 / ISO 8601 times or durations back from now (``7d``, ``6h``,
``1h30m``); by default the last day up to now. A recurring run with ``since=1d`` every day checks each
day's traffic once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path

from kfloop import timestamps
from kfloop.config import Settings
from kfloop.errors import ConfigError, ModelNotFound, RegistryError
from kfloop.events.outbox import Outbox
from kfloop.monitoring.attribution import load_attribution_baseline
from kfloop.monitoring.capture import read_captures
from kfloop.monitoring.constraints import load_baseline
from kfloop.monitoring.drift import X_REF_FILE, load_detector
from kfloop.monitoring.estimation import load_estimator
from kfloop.monitoring.feedback import labeled_frame
from kfloop.monitoring.job import (
    DEFAULT_MIN_LABELS,
    DEFAULT_MIN_ROWS,
    DEFAULT_WINDOW_ROWS,
    JobOptions,
    VersionInputs,
    run_job,
)
from kfloop.monitoring.multivariate import reference_rows
from kfloop.monitoring.quality import DEFAULT_METRIC
from kfloop.names import PROGRESS_MARKER, validate_model_name
from kfloop.report.monitoring import job_html, job_markdown
from kfloop.retraining.quality_signal import derived_threshold
from kfloop.retraining.schedule import parse_every
from kfloop.steps.common import read_json, write_json
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from kfloop.training.booster import load_model

DEFAULT_SINCE = "1d"
OUTBOX_NAME = "monitor"
DELIVERY_SECONDS = 30.0  # how long the step waits for its events to reach the sink


@dataclasses.dataclass(frozen=True)
class MonitorOptions:
    """What the step checks and where its alerts go. Thresholds < 0 (KFP's stand-in for None) are
    derived from the version's test metrics."""

    model: str
    since: str = DEFAULT_SINCE
    until: str = ""
    window_rows: int = DEFAULT_WINDOW_ROWS
    min_rows: int = DEFAULT_MIN_ROWS
    min_labels: int = DEFAULT_MIN_LABELS
    quality_metric: str = ""
    quality_threshold: float = -1.0
    quality_margin: float = 0.1
    estimated_threshold: float = -1.0
    emit: bool = True
    sink_url: str = ""
    source: str = ""

    def job_options(self) -> JobOptions:
        return JobOptions(self.window_rows, self.min_rows, self.min_labels)

    def check(self) -> None:
        validate_model_name(self.model)
        self.job_options()
        if not 0 <= self.quality_margin < 1:
            raise ConfigError(f"quality margin is {self.quality_margin!r}: expected a fraction in [0, 1)")


def resolve_range(since: str, until: str, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """``(since, until)`` as UTC times: each a time, or a duration back from ``now`` (``since``: by
    default ``DEFAULT_SINCE`` before ``until``); ConfigError when ``since`` is not before ``until``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    end = _moment(until, now, "until") if until.strip() else now
    start = _moment(since or DEFAULT_SINCE, end if not since.strip() else now, "since")
    if start >= end:
        raise ConfigError(f"the monitored range is empty: since {timestamps.rfc3339(start)} is not before until "
                          f"{timestamps.rfc3339(end)}")  # fmt: skip
    return start, end


def _moment(text: str, now: dt.datetime, what: str) -> dt.datetime:
    text = text.strip()
    if text and text[0].isdigit() and text[-1].lower() in "smhdw" and "-" not in text and ":" not in text:
        return now - dt.timedelta(seconds=parse_every(text))
    try:
        return timestamps.parse_time(text)
    except ValueError:
        raise ConfigError(
            f"--{what} {text!r} is neither a time (RFC 3339, e.g. 2026-05-01T00:00:00Z) nor a duration (7d, 6h)"
        ) from None


def run_monitoring(
    settings: Settings, options: MonitorOptions, out_dir: str | Path | None = None, progress: Callable = print
) -> dict:
    """Run the job; returns its summary (``JobResult.to_dict`` with the events and the report's text).
    With ``out_dir`` the report is written there too (``report.md``, ``report.html``, ``summary.json``)."""
    options.check()
    since, until = resolve_range(options.since, options.until)
    store = open_store(settings)
    registry = Registry(store)
    try:
        known = registry.version_numbers(options.model)
    except RegistryError:
        known = []
    if not known:
        raise ModelNotFound(f"model {options.model!r} has no registered version: nothing to monitor against")
    records = [r for r in read_captures(store, options.model, since=since) if _before(r, until)]
    by_version: dict[str, list[dict]] = {}
    for record in records:
        by_version.setdefault(str(record.get("model_version")), []).append(record)
    notes, versions = [], {}
    with tempfile.TemporaryDirectory(prefix="kfloop-monitor-") as tmp:
        for version in sorted(by_version, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)):
            rows = by_version[version]
            if not version.isdigit() or int(version) not in known:
                notes.append(f"{len(rows)} captured rows of version {version!r} skipped: not a registered version")
                continue
            inputs = _inputs(registry, options, int(version), Path(tmp) / version)
            labeled = labeled_frame(store, options.model, inputs.schema, version, since)
            if len(labeled):
                labeled = labeled[labeled["time"] < until]
            versions[version] = (inputs, rows, labeled)
            progress(f"{PROGRESS_MARKER}version {version}: {len(rows)} captured rows, {len(labeled)} labeled")
        result = run_job(
            options.model,
            versions,
            options.job_options(),
            since=timestamps.rfc3339(since),
            until=timestamps.rfc3339(until),
            notes=notes,
        )
    summary = result.to_dict()
    source = options.source or f"kfloop/monitor/{options.model}"
    events = result.events(source) if options.emit else []
    summary["events"] = _emit(settings, events, options.sink_url or settings.sink_url) if events else _none()
    summary["markdown"], summary["html"] = job_markdown(summary), job_html(summary)
    for signal, counts in summary["counts"].items():
        progress(f"{PROGRESS_MARKER}{signal}: {counts['alert']} alerting of {sum(counts.values())} windows")
    if out_dir is not None:
        write_outputs(summary, out_dir)
    return summary


def write_outputs(summary: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "summary": out / "summary.json"}
    paths["markdown"].write_text(summary["markdown"], encoding="utf-8")
    paths["html"].write_text(summary["html"], encoding="utf-8")
    write_json(paths["summary"], {k: v for k, v in summary.items() if k not in ("markdown", "html")})
    return paths


def _inputs(registry: Registry, options: MonitorOptions, version: int, folder: Path) -> VersionInputs:
    record, model_dir = registry.fetch_bundle(f"{options.model}:{version}", folder)
    schema = bundle.load_schema(model_dir)
    drift_dir = model_dir / bundle.DRIFT_DIR
    detector = load_detector(drift_dir) if drift_dir.is_dir() else None
    metric = options.quality_metric or None
    chosen = metric or DEFAULT_METRIC[schema.task]
    quality = options.quality_threshold
    if quality < 0:
        quality = derived_threshold(record, chosen, options.quality_margin)
    estimated = options.estimated_threshold
    if schema.task == "regression":
        estimated = None
    elif estimated < 0:
        estimated = derived_threshold(record, "accuracy", options.quality_margin)
    return VersionInputs(
        options.model, str(version), schema, detector, metric, quality, estimated, _signal_inputs(model_dir, schema)
    )


def _signal_inputs(model_dir: Path, schema) -> dict:
    """What the window signals need from a verified bundle; a part the bundle lacks (an older version)
    is left out, so its signal is absent. A part that does not match the schema is refused."""
    extra: dict = {"booster": load_model(model_dir / bundle.MODEL_FILE)}
    if (model_dir / bundle.DRIFT_DIR / X_REF_FILE).is_file():
        extra["reference_rows"] = reference_rows(model_dir, schema)
    extra["constraints"] = load_baseline(model_dir / bundle.DRIFT_DIR, schema)
    extra["attribution"] = load_attribution_baseline(model_dir, schema)
    extra["estimator"] = load_estimator(model_dir, schema)
    bias_path = model_dir / bundle.BIAS_FILE
    if bias_path.is_file():
        extra["bias"] = (read_json(bias_path) or {}).get("bias")
    return extra


def _before(record: dict, until: dt.datetime) -> bool:
    try:
        return timestamps.parse_time(str(record.get("time"))) < until
    except ValueError:
        return False


def _none() -> dict:
    return {"emitted": 0, "delivered": 0, "pending": 0, "ids": []}


def _emit(settings: Settings, events: list[dict], sink_url: str | None) -> dict:
    """Every event into the durable outbox, then (with a sink) delivered within ``DELIVERY_SECONDS``;
    what is not delivered moves to the object store, where the next run's outbox adopts it."""
    spill = open_store(settings) if sink_url else None  # a pod's outbox folder dies with it
    outbox = Outbox.for_settings(settings, OUTBOX_NAME, sink_url or None, spill=spill)
    for event in events:
        outbox.append(event)
    pending = outbox.depth
    if sink_url:
        outbox.start()
        outbox.drain(DELIVERY_SECONDS)
        pending = outbox.depth
        outbox.stop()
    return {
        "emitted": len(events),
        "delivered": outbox.delivered,
        "pending": pending,
        "ids": [e["id"] for e in events],
        "sink": sink_url or None,
    }

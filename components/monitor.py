"""monitor: the scheduled monitoring job over a model's captures (``kfloop.steps.monitor``).

Prints one progress line per version and signal (marked for ``kfloop monitor run``), writes the report
as KFP Markdown and HTML artifacts (the run's page shows them), the summary as JSON and the counts as
KFP Metrics, and returns a one-line account.
"""

from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output


def monitor(
    model: str,
    since: str,
    until: str,
    window_rows: int,
    min_rows: int,
    min_labels: int,
    quality_metric: str,
    quality_threshold: float,
    quality_margin: float,
    estimated_threshold: float,
    emit: bool,
    sink_url: str,
    report: Output[Markdown],
    report_html: Output[HTML],
    summary: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    import json
    from pathlib import Path

    from kfloop.config import Settings
    from kfloop.steps.monitor import MonitorOptions, run_monitoring

    options = MonitorOptions(
        model, since, until, window_rows, min_rows, min_labels, quality_metric, quality_threshold,
        quality_margin, estimated_threshold, emit, sink_url,
    )  # fmt: skip
    result = run_monitoring(Settings.from_env(), options, progress=lambda line: print(line, flush=True))
    for artifact, text in ((report, result.pop("markdown")), (report_html, result.pop("html"))):
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact.path).write_text(text, encoding="utf-8")
    Path(summary.path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary.path).write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    metrics.log_metric("windows", float(len(result["windows"])))
    metrics.log_metric("alerts", float(result["alerts"]))
    for signal, counts in sorted(result["counts"].items()):
        metrics.log_metric(f"{signal}_alerting_windows", float(counts["alert"]))
    windows, events = len(result["windows"]), result["events"]["emitted"]
    return f"{model}: {windows} windows checked, {result['alerts']} alerts, {events} events"

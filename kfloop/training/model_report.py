"""The model report: evaluation metrics, gate decision, bias and feature importance as Markdown.

The Kubeflow dashboard renders it as a Markdown artifact; it is also written into the model
bundle. Inputs are the plain dicts that ``kfloop.training.evaluate``, ``kfloop.training.bias`` and
``kfloop.training.explain`` return. ``bias`` may be one report (``bias_report``), ``{"reports": [...]}``
for several sensitive features, or ``{"skipped": reason}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

_NOT_SCALAR = {"confusion_matrix", "labels", "roc"}
_BIAS_COLUMNS = [
    ("group", "group"),
    ("n_d", "n_d"),
    ("n_a", "n_a"),
    ("class_imbalance", "CI"),
    ("dpl", "DPL"),
    ("dppl", "DPPL"),
    ("disparate_impact", "DI"),
    ("accuracy_difference", "AD"),
]


def render_markdown(metrics: dict, gate: dict, bias: dict | None, importance: dict | None) -> str:
    """The whole report as one Markdown document."""
    sections = [
        ["# Model report"],
        _metrics(metrics),
        _confusion(metrics),
        _gate(gate),
        _bias(bias),
        _importance(importance),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _metrics(metrics: dict) -> list[str]:
    rows = [(name, value) for name, value in metrics.items() if name not in _NOT_SCALAR]
    return ["## Evaluation metrics", "", *table(["metric", "value"], rows)]


def _confusion(metrics: dict) -> list[str]:
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if not matrix or not labels:
        return []
    header = ["true \\ predicted", *labels]
    rows = [(label, *counts) for label, counts in zip(labels, matrix)]
    return ["## Confusion matrix", "", "Rows are true classes, columns predicted classes.", "", *table(header, rows)]


def _gate(gate: dict) -> list[str]:
    verdict = "PASSED" if gate.get("passed") else "FAILED"
    rows = [
        (key, gate.get(key))
        for key in (
            "metric",
            "candidate",
            "production",
            "threshold",
            "threshold_rule",
            "baseline",
            "baseline_rule",
            "tolerance",
        )
    ]
    return [
        f"## Quality gate: {verdict}",
        "",
        f"**Reason:** {_cell(gate.get('reason', ''))}",
        "",
        *table(["", "value"], rows),
    ]


def _bias(bias: dict | None) -> list[str]:
    if not bias:
        return []
    if "skipped" in bias:
        return ["## Bias", "", f"Not computed: {_cell(bias['skipped'])}"]
    reports = bias.get("reports", [bias])
    lines = [
        "## Bias (SageMaker Clarify metrics)",
        "",
        "Each group (facet d) is compared with all other rows (facet a); positive = the positive class.",
        "",
    ]
    for report in reports:
        binned = " (quantile bins)" if report.get("binned") else ""
        rows = [[group.get(key) for key, _ in _BIAS_COLUMNS] for group in report.get("groups", [])]
        lines += [
            f"### {_cell(report.get('feature') or 'sensitive feature')}{binned}",
            "",
            *table([title for _, title in _BIAS_COLUMNS], rows),
            "",
        ]
    definitions = reports[0].get("definitions", {}) if reports else {}
    lines += [f"- {_cell(text)}" for text in definitions.values()]
    return lines


def _importance(importance: dict | None) -> list[str]:
    if not importance:
        return []
    rows = [(f["name"], f["importance"]) for f in importance.get("features", [])]
    return [
        "## Feature importance",
        "",
        f"Method: {importance.get('method')} over {importance.get('n_rows')} rows.",
        "",
        *table(["feature", "importance"], rows),
    ]


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")

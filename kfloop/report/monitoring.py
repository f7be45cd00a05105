"""The scheduled monitoring job's report (``kfloop.monitoring.job``), as Markdown and as HTML.

Both take ``JobResult.to_dict()``: a summary per signal (windows ok / alerting / with too few rows),
the alerts with their evidence, and every window's status per signal; the HTML adds a chart per signal
(its value per window against the threshold). Signals that gave no result for any window (no labels,
no baseline) are absent, not zero. KFP shows the Markdown (``Output[Markdown]``) and the HTML
(``Output[HTML]``) in the run's page; the HTML reuses the monitoring report's style and table helpers
(``kfloop.report.page``) and plots (``kfloop.report.plots``).
"""

from __future__ import annotations

import json

from kfloop.names import SIGNALS
from kfloop.report.page import STYLE, Html, esc, table

MAX_WINDOW_ROWS = 200  # the windows table lists at most this many (the summary counts them all)
STATUS_MARK = {"ok": "ok", "alert": "ALERT", "insufficient": "too few rows"}


def _signals(doc: dict) -> list[str]:
    seen = {s["signal"] for w in doc["windows"] for s in w["signals"]}
    return [s for s in SIGNALS if s in seen]


def _alerts(doc: dict) -> list[tuple[dict, dict]]:
    return [(w, s) for w in doc["windows"] for s in w["signals"] if s["status"] == "alert"]


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _evidence_text(result: dict, limit: int = 160) -> str:
    evidence = dict(result.get("evidence") or {})
    if result["signal"] == "feature_drift":
        by_feature = evidence.get("p_val_by_feature") or {}
        drifted = evidence.get("drifted") or []
        return ", ".join(f"{f} p={_num(by_feature.get(f))}" for f in drifted) or "-"
    evidence.pop("metrics", None)
    text = json.dumps(evidence, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _range(doc: dict) -> str:
    return f"{doc.get('since') or 'the first capture'} to {doc.get('until') or 'now'}"


def _headline(doc: dict) -> str:
    n_alerts, n_windows = len(_alerts(doc)), len(doc["windows"])
    if not n_windows:
        return "No captured rows in this range: nothing was checked."
    versions = sorted({w["model_version"] for w in doc["windows"]}, key=lambda v: (len(v), v))
    pooled = [w["model_version"] for w in doc["windows"] if w.get("pooled")]
    text = (
        f"{n_windows} window{'s' if n_windows != 1 else ''} of version{'s' if len(versions) != 1 else ''} "
        f"{', '.join(versions)} checked: {n_alerts} alert{'s' if n_alerts != 1 else ''}."
    )
    if pooled:
        text += (
            f" Version {', '.join(sorted(set(pooled)))} had fewer rows than a window "
            f"({doc['options']['window_rows']}): the whole range is one pooled window."
        )
    return text


def _summary_rows(doc: dict) -> list[tuple]:
    counts = doc.get("counts") or {}
    return [(s, counts[s]["ok"], counts[s]["alert"], counts[s]["insufficient"]) for s in _signals(doc)]


def _window_cell(window: dict, signal: str) -> str:
    result = next((s for s in window["signals"] if s["signal"] == signal), None)
    if result is None:
        return "-"
    mark = STATUS_MARK[result["status"]]
    return mark if result["value"] is None else f"{mark} ({_num(result['value'])})"


def _insufficient(doc: dict) -> list[str]:
    reasons = {}
    for w in doc["windows"]:
        for s in w["signals"]:
            if s["status"] == "insufficient":
                reasons.setdefault((s["signal"], s["reason"]), []).append(f"{w['model_version']}/{w['window_index']}")
    return [f"{signal}: {reason} (windows {', '.join(where)})" for (signal, reason), where in reasons.items()]


# -- Markdown ----------------------------------------------------------------------------------------


def _md_table(headers: list[str], rows: list[tuple]) -> str:
    def cell(value: object) -> str:
        return str(value if value is not None else "-").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def job_markdown(doc: dict) -> str:
    """The report as Markdown (what KFP's Markdown visualization shows)."""
    parts = [f"# Monitoring: {doc['model']}", "", f"Captures from {_range(doc)}. {_headline(doc)}", ""]
    if doc["windows"]:
        parts += ["## Signals", "", _md_table(["signal", "ok", "alert", "too few rows"], _summary_rows(doc)), ""]
        alerts = _alerts(doc)
        parts += ["## Alerts", ""]
        if alerts:
            rows = [
                (s["signal"], w["model_version"], w["window_index"], w["rows"], f"{w['start']} - {w['end']}",
                 _num(s["value"]), f"{s['direction']} {_num(s['threshold'])}", _evidence_text(s))
                for w, s in alerts
            ]  # fmt: skip
            headers = ["signal", "version", "window", "rows", "span", "value", "alerts when", "evidence"]
            parts += [_md_table(headers, rows), ""]
        else:
            parts += ["No signal alerted.", ""]
        signals = _signals(doc)
        shown = doc["windows"][:MAX_WINDOW_ROWS]
        rows = [
            (w["model_version"], w["window_index"], w["rows"], w["labeled"], *(_window_cell(w, s) for s in signals))
            for w in shown
        ]
        parts += ["## Windows", "", _md_table(["version", "window", "rows", "labeled", *signals], rows), ""]
        if len(doc["windows"]) > len(shown):
            parts += [f"(first {len(shown)} of {len(doc['windows'])} windows)", ""]
    too_few = _insufficient(doc)
    if too_few:
        parts += ["## Too few rows", "", *(f"- {line}" for line in too_few), ""]
    if doc.get("notes"):
        parts += ["## Notes", "", *(f"- {note}" for note in doc["notes"]), ""]
    return "\n".join(parts)


# -- HTML ----------------------------------------------------------------------------------------------


def _plot(doc: dict, signal: str) -> str | None:
    """The signal's value per window (per version), with its threshold; None with nothing to draw."""
    points = [
        (w["model_version"], w["window_index"], s)
        for w in doc["windows"]
        for s in w["signals"]
        if s["signal"] == signal and s["value"] is not None
    ]
    if not points:
        return None
    from matplotlib.ticker import MaxNLocator

    from kfloop.report.plots import P_FLOOR, plt, png_base64

    log = signal == "feature_drift"  # p-values: a log axis, 0 drawn at P_FLOOR

    def shown(value: float) -> float:
        return max(value, P_FLOOR) if log else value

    fig, ax = plt.subplots(figsize=(8, 2.6))
    fig.subplots_adjust(left=0.1, right=0.82, bottom=0.2, top=0.85)
    for version in sorted({v for v, _, _ in points}, key=lambda v: (len(v), v)):
        mine = [(i, s) for v, i, s in points if v == version]
        ax.plot([i for i, _ in mine], [shown(s["value"]) for _, s in mine], marker="o", ms=4, label=f"v{version}")
        alerts = [(i, shown(s["value"])) for i, s in mine if s["status"] == "alert"]
        if alerts:
            ax.scatter([i for i, _ in alerts], [v for _, v in alerts], color="tab:red", zorder=3, s=30)
    thresholds = sorted({s["threshold"] for _, _, s in points if s["threshold"] is not None})
    for threshold in thresholds[:3]:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1)
    if log:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("window")
    ax.set_title(f"{signal}: value per window (red: alert; dashed: threshold)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png_base64(fig)


def job_html(doc: dict) -> str:
    """The report as one self-contained HTML page (what KFP's HTML visualization shows)."""
    parts = [
        f"<h1>Monitoring: {esc(doc['model'])}</h1>",
        f"<p>Captures from {esc(_range(doc))}. {esc(_headline(doc))}</p>",
    ]
    if doc["windows"]:
        parts += [
            "<h2>Signals</h2>",
            table(["signal", "ok", "alert", "too few rows"], _summary_rows(doc), id_="signals"),
        ]
        alerts = _alerts(doc)
        parts.append("<h2>Alerts</h2>")
        if alerts:
            rows = [
                (s["signal"], w["model_version"], w["window_index"], w["rows"], f"{w['start']} - {w['end']}",
                 Html(f"<span class='bad'>{esc(_num(s['value']))}</span>"),
                 f"{s['direction']} {_num(s['threshold'])}", _evidence_text(s))
                for w, s in alerts
            ]  # fmt: skip
            headers = ["signal", "version", "window", "rows", "span", "value", "alerts when", "evidence"]
            parts.append(table(headers, rows, id_="alerts"))
        else:
            parts.append("<p class='ok' id='alerts'>No signal alerted.</p>")
        for signal in _signals(doc):
            png = _plot(doc, signal)
            if png:
                parts.append(
                    f"<img id='plot-{esc(signal)}' alt='{esc(signal)} per window' src='data:image/png;base64,{png}'>"
                )
        signals = _signals(doc)
        rows = [
            (w["model_version"], w["window_index"], w["rows"], w["labeled"], *(_window_cell(w, s) for s in signals))
            for w in doc["windows"][:MAX_WINDOW_ROWS]
        ]
        parts.append(
            f"<details><summary>Every window ({len(doc['windows'])})</summary>"
            + table(["version", "window", "rows", "labeled", *signals], rows, id_="windows")
            + "</details>"
        )
    too_few = _insufficient(doc)
    if too_few:
        parts.append("<h2>Too few rows</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in too_few) + "</ul>")
    if doc.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in doc["notes"]) + "</ul>")
    title = f"kfloop monitoring: {doc['model']}"
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )

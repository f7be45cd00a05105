"""The monitoring report: one self-contained HTML page about what the loop saw and did.

For each model: a one-screen status per version (healthy / drifting / data issues / degraded, with
the signals that alerted in its last windows and its last decision), a summary, feature drift over
every checked window with the reference-vs-served distributions of the features that moved, every
monitoring signal of the window summaries (ok / alert / too few rows per signal and version, and the
violated constraints of the last alerting data-quality window), a timeline of drift, retraining and
rollout events, live quality per version (from feedback labels, next to the calibrated estimate, or
the uncalibrated one for bundles without a calibrator), the traffic split between revisions, the
canary decisions with their evidence, and the registry lineage. A signal no window has a result for
is absent, not zero. Plots are PNGs (``kfloop.report.plots``) embedded as base64 ``data:`` images and the
style sheet is inline, so the file needs nothing else to open. Every text taken from the
store is HTML-escaped. A small inline script sets ``data-loaded`` on ``<body>`` to the number
of images the browser decoded and ``data-layout`` to the boxes of the elements the browser test
checks (the page reads the same without it). Tables longer than ``FOLD_ROWS`` rows are folded
in ``<details>``.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

from kfloop.errors import ModelNotFound
from kfloop.names import key_segment
from kfloop.report import data as rd
from kfloop.report import plots
from kfloop.store.objects import ObjectStore

MAX_ROWS = 50
FOLD_ROWS = 8  # longer tables start folded
STYLE = """body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.6em}h2{border-bottom:2px solid #ccd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccd;
padding:3px 8px;text-align:left;vertical-align:top}th{background:#eef}p.note{color:#555;font-style:italic}
td:first-child{white-space:nowrap}img{max-width:100%;display:block;margin:.6em 0}
ul.ev{margin:0;padding-left:1.1em}.bad{color:#b00}.ok{color:#070}
.status{border:1px solid #ccd;border-radius:6px;padding:.4em .9em;margin:.8em 0;background:#fafaff}
.badge{display:inline-block;padding:1px 9px;border-radius:9px;color:#fff;font-weight:600}
.badge.healthy{background:#1a7f37}.badge.drifting{background:#cf222e}.badge.degraded{background:#bc4c00}
.badge.not-checked{background:#6e7781}.badge.data-issues{background:#9a6700}
details{margin:.5em 0}summary{cursor:pointer;color:#335}
.dists{display:grid;grid-template-columns:1fr 1fr;gap:.4em}.dists img{margin:0}"""
SCRIPT = """window.addEventListener('load',function(){var n=0;for(var i of document.images){
if(i.complete&&i.naturalWidth>0)n++;}document.body.setAttribute('data-loaded',String(n));
var boxes={};for(var e of document.querySelectorAll('[data-box]')){var r=e.getBoundingClientRect();
boxes[e.id]=[Math.round(r.left),Math.round(r.top+window.scrollY),Math.round(r.width),Math.round(r.height)];}
document.body.setAttribute('data-layout',JSON.stringify(boxes));});"""


INTROS = {  # anchor: (heading, explanation)
    "status": (
        "Status",
        "Per version: degraded (a quality-degraded event names it), drifting (its last window, or half of "
        "its last 5, drifted, or so did its predictions), data issues (so did its data-quality check), "
        "healthy (checked, none of those), with the other signals that alerted in its last 5 windows and "
        "its last decision.",
    ),
    "summary": ("Summary", ""),
    "drift": (
        "Feature drift",
        "Each drift check compares a window of served rows with the version's drift reference (its "
        "training data, or for a version retrained because of drift the traffic served since), one test "
        "per feature (Kolmogorov-Smirnov for numeric, chi-squared for categorical); a window drifts when a "
        f"feature's p-value falls below the threshold (dashed line). Each point is a checked window's "
        f"smallest p-value; p-values of 0 are drawn at {plots.P_FLOOR:g}.",
    ),
    "signals": (
        "Monitoring signals",
        "Every check run on each window, per version: how many windows were ok, alerted, or had too few "
        "rows for a verdict (not a verdict), and the last verdict's value against its threshold. A signal "
        "that was never computed for a version (no baseline constraints in an older bundle) is not listed.",
    ),
    "timeline": (
        "Timeline",
        "Drift, quality, retraining and rollout events, and registry stage changes, on one "
        "time axis. Feedback posts are counted: one table row for each run of posts between other events.",
    ),
    "quality": (
        "Live quality",
        "Quality measured on served requests that received a label (feedback), per version and window "
        "of labeled rows, next to the label-free estimate made from the captured predictions alone. A "
        "version whose bundle has a calibrator gets the calibrated estimate (CBPE for classifiers, DLE "
        "for regressors) of each labeled window, shown against what the labels realized; an older bundle "
        "without one gets the uncalibrated estimate (the mean confidence of its captured predictions: the "
        "expected accuracy only if the model is calibrated), labeled so. Both assume the relation "
        "between features and labels has not changed.",
    ),
    "traffic": ("Traffic split", "Captured requests per revision and version over time."),
    "canary": (
        "Canary decisions",
        "Each step of a canary analysis: the traffic share, the metrics compared between "
        "canary and stable, and the verdict.",
    ),
    "lineage": ("Registry lineage", "Where each version came from and the stages it went through."),
}


class Html(str):
    """Markup that is already escaped (everything else is escaped on output)."""


def esc(value: object) -> str:
    return value if isinstance(value, Html) else html.escape("-" if value is None else str(value))


def build_report(store: ObjectStore, model: str | None = None) -> str:
    """The report (HTML text) for ``model``, or for every model in ``store`` when None.

    A named model with nothing recorded raises ModelNotFound (most likely a misspelt name); a
    store with nothing at all gives a short page saying so.
    """
    models = [model] if model else rd.models_in(store)
    facts = [rd.gather(store, name) for name in models]
    if model and facts[0].empty:
        raise ModelNotFound(
            f"nothing recorded for model {model!r} in {store.uri('')}: no registered versions, "
            f"captures or events (known models: {', '.join(rd.models_in(store)) or 'none'})"
        )
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [f"<h1>kfloop monitoring report</h1><p>Store <code>{esc(store.uri(''))}</code>, generated {now}.</p>"]
    if not facts:
        parts.append(
            "<p class='note' id='nothing-recorded'>Nothing was recorded in this store yet: no registered "
            "model versions, no captured requests and no loop events.</p>"
        )
    if len(facts) > 1:
        parts.append(
            "<p>Models: " + ", ".join(f"<a href='#model-{esc(f.model)}'>{esc(f.model)}</a>" for f in facts) + "</p>"
        )
    parts += [_model_section(store, f, suffix=f"-{f.model}" if len(facts) > 1 else "") for f in facts]
    return _page("kfloop monitoring report" + (f": {model}" if model else ""), "\n".join(parts))


def write_report(store: ObjectStore, model: str | None, path: str | Path) -> Path:
    """Build the report and write it to ``path`` (folders created); returns the path."""
    path = Path(path)
    text = build_report(store, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n{body}\n</body></html>\n"
    )


def _model_section(store: ObjectStore, facts: rd.ModelFacts, suffix: str) -> str:
    windows = rd.drift_windows(facts)
    sections = [
        _status(facts, windows, suffix),
        _summary(facts, suffix),
        _drift(store, facts, windows, suffix),
        _signals(windows, suffix),
        _timeline(facts, suffix),
        _quality(store, facts, suffix),
        _traffic(facts, suffix),
        _decisions(facts, suffix),
        _lineage(facts, suffix),
    ]
    return (
        f"<section id='model-{esc(facts.model)}'><h2>Model {esc(facts.model)}</h2>\n"
        + "\n".join(sections)
        + "</section>"
    )


def _heading(anchor: str, suffix: str) -> str:
    """A section's ``<h3>`` (its id is ``anchor`` + ``suffix``) and its explanation."""
    title, intro = INTROS[anchor]
    return f"<h3 id='{esc(anchor + suffix)}'>{esc(title)}</h3>" + (f"<p>{esc(intro)}</p>" if intro else "")


def _note(text: str, id_: str | None = None) -> str:
    attrs = f" id='{esc(id_)}'" if id_ else ""
    return f"<p class='note'{attrs}>{esc(text)}</p>"


def _summary(facts: rd.ModelFacts, suffix: str) -> str:
    prod, canary = rd.production(facts), rd.canary(facts)
    versions = ", ".join(f"v{v.version} ({v.stage})" for v in facts.versions) or "none registered"
    rows = [
        ("model", facts.model),
        ("versions", versions),
        ("current production", f"v{prod.version}" if prod else "none"),
        ("canary", f"v{canary}" if canary else "none"),
        *rd.counts(facts).items(),
    ]
    return _heading("summary", suffix) + table(["", ""], rows, head=False, id_="summary-table" + suffix)


def _status(facts: rd.ModelFacts, windows: list[dict], suffix: str) -> str:
    rows = []
    for r in rd.version_status(facts, windows):
        last = r["last_window"]
        badge = Html(f"<span class='badge {esc(r['status'].replace(' ', '-'))}'>{esc(r['status'])}</span>")
        degraded = r["degraded"][-1] if r["degraded"] else None
        if degraded:
            count = len({str(d.get("window_index", k)) for k, d in enumerate(r["degraded"])})
            badge = Html(
                f"{badge} {esc(degraded.get('metric') or 'quality')} {esc(_fmt(degraded.get('value')))} &lt; "
                f"{esc(_fmt(degraded.get('threshold')))} ({count} window{'s' if count > 1 else ''}, last at "
                f"{esc((_time(degraded.get('time')) or '-')[11:])})"
            )
        rows.append(
            (
                f"v{r['version']}",
                r["stage"],
                badge,
                f"{r['drifted']} of {r['windows']}" if r["windows"] else "-",
                f"{_time(last['time'])} ({'drifted' if last['is_drift'] else 'clean'})" if last else None,
                _alerts(r["alerts"]),
                f"{_time(r['decision_time'])} {r['decision']}" if r["decision"] else None,
            )
        )
    if not rows:
        return _heading("status", suffix) + _note("No versions registered or checked.")
    header = ["version", "stage", "status", "windows drifted", "last window", "signals alerting", "last decision"]
    return (
        f"<div class='status' id='status-block{esc(suffix)}' data-box>"
        + _heading("status", suffix)
        + _fold(table(header, rows, id_="status-table" + suffix), len(rows), "versions", "fold-status" + suffix)
        + "</div>"
    )


def _drift(store: ObjectStore, facts: rd.ModelFacts, windows: list[dict], suffix: str) -> str:
    out = [_heading("drift", suffix)]
    if not windows:
        return out[0] + _note("No drift windows recorded.")
    if not facts.windows and all(w["is_drift"] for w in windows):
        out.append(
            _note(
                "This store holds no window summaries, only the drift events (written only for windows "
                "where drift was detected); windows without drift are not shown.",
                "drift-only-drifted" + suffix,
            )
        )
    moved = rd.moved_features(windows)
    out.append(
        f"<p>{len(windows)} windows checked, {sum(w['is_drift'] for w in windows)} drifted.</p>"
        + _img(
            "plot-drift" + suffix,
            plots.drift_plot(windows, [(m["version"], m["feature"]) for m in moved]),
            "Smallest drift p-value of every window",
        )
    )
    dists = [(m, plots.distribution_plot(m)) for m in rd.feature_distributions(store, facts, moved)]
    dists = [(m, png) for m, png in dists if png is not None]
    if dists:
        out.append(
            "<h4>Reference vs served, for the features that moved</h4><p>Each version's drift reference "
            "next to the values it served in the windows where the feature drifted.</p><div class='dists'>"
            + "".join(
                _img(
                    f"plot-dist-{key_segment(m['version'] + '-' + m['feature'])}{suffix}",
                    png,
                    f"v{m['version']} {m['feature']}",
                )
                for m, png in dists
            )
            + "</div>"
        )
    rows = [
        (
            _time(w["time"]),
            f"v{w['version']}",
            w["window_index"],
            w["window_size"],
            "yes" if w["is_drift"] else "no",
            _fmt(w["threshold"]),
            ", ".join(_drifted(w)) or "-",
        )
        for w in windows[-MAX_ROWS:]
    ]
    header = ["time", "version", "window", "rows", "drift", "threshold", "features below threshold (p-value)"]
    shown = table(header, rows, id_="drift-table" + suffix)
    return "".join(out) + _fold(Html(_capped(len(windows)) + shown), len(rows), "windows", "fold-drift" + suffix)


def _alerts(alerts: list[dict]) -> Html | None:
    """The status cell of the signals that alerted in a version's last windows, e.g.
    ``data_quality 4 of 5: tenure out of range``; None (shown as -) when none did."""
    if not alerts:
        return None
    return Html(
        "<br>".join(
            f"<span class='bad'>{esc(a['signal'])}</span> {a['alerts']} of {a['verdicts']}"
            + (f": {esc(a['detail'])}" if a["detail"] else "")
            for a in alerts
        )
    )


def _signals(windows: list[dict], suffix: str) -> str:
    counts = rd.signal_table(windows)
    if not counts:
        return _heading("signals", suffix) + _note("No window summary holds signal results.")
    rows = []
    for c in counts:
        last = c["last"]
        verdict = None
        if last is not None:
            side = "&gt;" if last["direction"] == "above" else "&lt;"
            mark = "bad" if last["status"] == "alert" else "ok"
            verdict = Html(
                f"<span class='{mark}'>{esc(last['status'])}</span> {esc(_fmt(last['value']))} "
                f"(alerts {side} {esc(_fmt(last['threshold']))})"
            )
        rows.append((c["signal"], f"v{c['version']}", c["ok"], c["alert"], c["insufficient"], verdict))
    header = ["signal", "version", "windows ok", "alert", "too few rows", "last verdict"]
    out = [
        _heading("signals", suffix),
        _img("plot-signals" + suffix, plots.signal_plot(windows), "Every signal's result per window"),
        _fold(table(header, rows, id_="signals-table" + suffix), len(rows), "signal rows", "fold-signals" + suffix),
    ]
    reasons = [(c, reason, n) for c in counts for reason, n in c["reasons"].items()]
    if reasons:
        out.append(
            "<p class='note' id='signals-too-few"
            + esc(suffix)
            + "'>Too few rows: "
            + "; ".join(
                f"{esc(c['signal'])} v{esc(c['version'])}, {n} window{'s' if n > 1 else ''}: {esc(reason)}"
                for c, reason, n in reasons
            )
            + ".</p>"
        )
    for last in rd.last_violations(windows):
        vrows = [
            (
                v.get("feature") or "-",
                rd.CHECK_NAMES.get(str(v.get("check")), v.get("check")),
                v.get("count"),
                _fmt(v.get("share")),
                _fmt(v.get("limit")),
                _violation_detail(v),
            )
            for v in last["violations"]
        ]
        out.append(
            f"<h4>Violated constraints: v{esc(last['version'])}, window {esc(last['window_index'])} "
            f"({esc(_time(last['time']))}, {esc(last['rows'])} rows), its last alerting data-quality window</h4>"
            + table(
                ["feature", "check", "rows", "share", "tolerated share", "details"],
                vrows,
                id_=f"violations-table-{key_segment(last['version'])}{suffix}",
            )
        )
    return "".join(out)


def _violation_detail(v: dict) -> str:
    if v.get("check") == "out_of_range":
        low, high = (v.get("range") or [None, None])[:2]
        return (
            f"training range {_fmt(low)} to {_fmt(high)}; window {_fmt(v.get('window_min'))} to "
            f"{_fmt(v.get('window_max'))} ({_fmt(v.get('below'))} below, {_fmt(v.get('above'))} above)"
        )
    if v.get("check") == "missing_rate":
        return f"training missing rate {_fmt(v.get('training_rate'))}"
    return ""


def _timeline(facts: rd.ModelFacts, suffix: str) -> str:
    points = [(rd.parse_time(e.get("time")), str(e.get("type"))) for e in facts.events]
    points += [(rd.parse_time(h.get("time")), "registry") for v in facts.versions for h in v.stage_history]
    image = plots.timeline_plot([(t, k) for t, k in points if t is not None])
    if image is None:
        return _heading("timeline", suffix) + _note("No events recorded.")
    shown = rd.timeline_events(facts)  # feedback posts counted, one row per run of them
    rows = [
        (_time(rd.parse_time(e.get("time"))), e.get("type"), e.get("source"), _brief(e.get("data")))
        for e in shown[-MAX_ROWS:]
    ]
    return (
        _heading("timeline", suffix)
        + _img("plot-timeline" + suffix, image, "Timeline of the loop's events")
        + _fold(
            Html(_capped(len(shown)) + table(["time", "type", "source", "data"], rows, id_="events-table" + suffix)),
            len(rows),
            "events",
            "fold-events" + suffix,
        )
    )


def _quality(store: ObjectStore, facts: rd.ModelFacts, suffix: str) -> str:
    quality = rd.live_quality(store, facts)
    metric = quality["metric"] or "metric"
    out = [_heading("quality", suffix)]
    if quality["note"]:
        out.append(_note(quality["note"], "quality-note" + suffix))
    image = plots.quality_plot(quality["series"], metric)
    if image is not None:
        out.append(_img("plot-quality" + suffix, image, "Live quality per version over windows"))
    if quality["rows"]:
        rows = [
            (
                f"v{r['model_version']}",
                r["window_index"],
                _time(rd.parse_time(r["start"])),
                _time(rd.parse_time(r["end"])),
                r["n"],
                _fmt(r.get(metric)),
            )
            for r in quality["rows"][-MAX_ROWS:]
        ]
        header = ["version", "window", "first prediction", "last prediction", "rows", metric]
        out += [
            f"<p>Windows of {esc(quality['window'])} labeled rows.</p>",
            _fold(
                Html(_capped(len(quality["rows"])) + table(header, rows, id_="quality-table" + suffix)),
                len(rows),
                "labeled windows",
                "fold-quality" + suffix,
            ),
        ]
    out.append(_estimates(quality, metric, suffix))
    return "".join(out)


def _estimates(quality: dict, metric: str, suffix: str) -> str:
    """Which estimate each version gets, and the calibrated estimate of each labeled window against
    what its labels realized."""
    calibrated = quality["calibrated"]
    uncalibrated = sorted({name.split()[0] for name in quality["series"] if name.endswith("(uncalibrated)")})
    lines = []
    if calibrated:
        lines.append(f"Calibrated estimate: {', '.join('v' + v for v in calibrated)}.")
    if uncalibrated:
        lines.append(
            f"Uncalibrated estimate (mean confidence; the bundle has no calibrator): {', '.join(uncalibrated)}."
        )
    out = [_note(" ".join(lines), "estimate-kinds" + suffix)] if lines else []
    rows = []
    for r in quality["estimates"][-MAX_ROWS:]:
        estimated, realized = _number(r["estimated"].get(metric)), _number(r["realized"].get(metric))
        error = None if estimated is None or realized is None else f"{estimated - realized:+.4f}"
        rows.append(
            (
                f"v{r['model_version']}",
                r["window_index"],
                _time(rd.parse_time(r["end"])),
                r["n"],
                _fmt(estimated),
                _fmt(realized),
                error,
            )
        )
    if rows:
        header = ["version", "window", "last prediction", "rows", f"estimated {metric}", f"realized {metric}",
                  "estimate - realized"]  # fmt: skip
        out.append(
            _fold(
                Html(_capped(len(quality["estimates"])) + table(header, rows, id_="estimate-table" + suffix)),
                len(rows),
                "estimated windows",
                "fold-estimates" + suffix,
            )
        )
    return "".join(out)


def _number(value: object) -> float | None:
    """A finite number, else None (a metric the labels could not give, such as AUC of one class)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) != float("inf")
    return value if ok and value == value else None


def _traffic(facts: rd.ModelFacts, suffix: str) -> str:
    split = rd.traffic(facts)
    if not split["starts"]:
        return _heading("traffic", suffix) + _note("No captured requests.")
    rows = [(label, sum(counts)) for label, counts in split["series"].items()]
    return (
        _heading("traffic", suffix)
        + _img("plot-traffic" + suffix, plots.traffic_plot(split), "Traffic split over time by revision and version")
        + table(["revision and version", "requests"], rows, id_="traffic-table" + suffix)
    )


def _decisions(facts: rd.ModelFacts, suffix: str) -> str:
    decisions = rd.rollout_decisions(facts)
    if not decisions:
        return _heading("canary", suffix) + _note("No rollout decisions recorded.")
    rows = [
        (
            _time(d["time"]),
            _v(d["canary"]),
            _v(d["stable"]),
            d["step"],
            None if d["percent"] is None else f"{d['percent']}%",
            _evidence(d["evidence"]),
            d["verdict"],
            d["reason"],
        )
        for d in decisions
    ]
    header = ["time", "canary", "stable", "step", "percent", "metrics compared", "verdict", "reason"]
    return _heading("canary", suffix) + _fold(
        table(header, rows, id_="canary-table" + suffix), len(rows), "steps", "fold-canary" + suffix
    )


def _lineage(facts: rd.ModelFacts, suffix: str) -> str:
    if not facts.versions:
        return _heading("lineage", suffix) + _note("No registered versions.")
    header = ["version", "stage", "created", "parent", "pipeline run", "data", "primary metric", "stage history"]
    return _heading("lineage", suffix) + table(
        header, [_lineage_row(v) for v in facts.versions], id_="lineage-table" + suffix
    )


def _lineage_row(v) -> tuple:
    lineage = v.lineage or {}
    metric, value = rd.primary_metric(v)
    data = lineage.get("data_uri")
    checksum = str(lineage.get("data_sha256") or "")[:12]
    history = Html(
        "<ul class='ev'>"
        + "".join(
            f"<li>{esc(_time(rd.parse_time(h.get('time'))))} {esc(_history_what(h))} "
            f"({esc(h.get('reason') or '-')})</li>"
            for h in v.stage_history
        )
        + "</ul>"
    )
    return (
        f"v{v.version}",
        v.stage,
        _time(rd.parse_time(v.created_at)),
        _v(lineage.get("parent_version")),
        lineage.get("pipeline_run_name") or lineage.get("pipeline_run_id"),
        f"{data} (sha256 {checksum}…)" if data and checksum else data,
        f"{metric}={value:.4f}" if metric and value is not None else None,
        history,
    )


def table(headers: list[str], rows: list[tuple], head: bool = True, id_: str | None = None) -> Html:
    """An HTML table; every cell is escaped unless it is ``Html``."""
    attrs = f" id='{esc(id_)}' data-box" if id_ else ""
    top = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return Html(f"<table{attrs}>{top}{body}</table>")


def _fold(content: Html, rows: int, what: str, id_: str) -> Html:
    """``content`` as is when it has at most ``FOLD_ROWS`` rows, else folded in ``<details id=id_>``."""
    if rows <= FOLD_ROWS:
        return content
    return Html(
        f"<details id='{esc(id_)}' data-box><summary>{rows} {esc(what)} (click to show)</summary>{content}</details>"
    )


def _img(id_: str, png: str | None, alt: str) -> str:
    if png is None:
        return "<p class='note'>Nothing to plot.</p>"
    return f"<img id='{esc(id_)}' data-box alt='{esc(alt)}' src='data:image/png;base64,{png}'>"


def _evidence(items: list[dict]) -> Html:
    if not items:
        return Html("-")
    lines = []
    for item in items:
        verdict = {True: " <span class='ok'>ok</span>", False: " <span class='bad'>failed</span>"}.get(
            item["passed"], ""
        )
        limit = f", threshold {esc(_fmt(item['threshold']))}" if item["threshold"] is not None else ""
        lines.append(
            f"<li>{esc(item['metric'])}: canary {esc(_fmt(item['canary']))} vs stable "
            f"{esc(_fmt(item['stable']))}{limit}{verdict}</li>"
        )
    return Html("<ul class='ev'>" + "".join(lines) + "</ul>")


def _drifted(window: dict) -> list[str]:
    limit = window["threshold"]
    return [
        f"{name} ({_fmt(p)})"
        for name, p in sorted(window["p_values"].items())
        if p is not None and limit is not None and p < limit
    ]


def _brief(data: object, limit: int = 160) -> str:
    """Scalar fields of an event's data as ``key=value`` text (nested parts left out)."""
    if not isinstance(data, dict):
        return "" if data is None else str(data)[:limit]
    text = ", ".join(f"{k}={_fmt(v)}" for k, v in data.items() if isinstance(v, (str, int, float, bool)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _capped(total: int) -> str:
    return f"<p class='note'>The last {MAX_ROWS} of {total} rows.</p>" if total > MAX_ROWS else ""


def _v(version: object) -> str | None:
    return None if version is None else f"v{version}"


def _time(when: dt.datetime | None) -> str | None:
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else None


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _history_what(entry: dict) -> str:
    """A stage-history entry's stage, or for an alias move the alias and what happened to it."""
    return entry.get("stage") or f"alias {entry.get('alias')} {entry.get('action')}"

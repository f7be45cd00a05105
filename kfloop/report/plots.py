"""The monitoring report's plots: matplotlib (Agg) figures returned as base64 PNG text.

Each function takes the plain rows of ``kfloop.report.data`` and returns the PNG, base64
encoded, ready for a ``data:image/png;base64,...`` image, or None when there is nothing to draw.
"""

from __future__ import annotations

import base64
import datetime as dt
import io

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: must come before pyplot

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from kfloop import names  # noqa: E402

P_FLOOR = 1e-16  # p-values of 0 drawn here on the log axis
WIDTH, HEIGHT, DPI = 10.0, 3.6, 96
MIN_SPAN = dt.timedelta(seconds=10)  # the time axes fit the data: only a single instant gets this much
CLEAN, DRIFTED = "#2ca02c", "#d62728"  # a window's verdict in the drift chart (tab:green, tab:red)
FEATURE_COLOURS = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
VERSION_MARKERS = "os^Dvp"
REFERENCE, LIVE = "#7f7f7f", "#1f77b4"
MARGINS = {"left": 0.09, "right": 0.80, "bottom": 0.2, "top": 0.9}
LANES = [
    (names.DRIFT_DETECTED, "drift", "tab:red", "v"),
    (names.QUALITY_DEGRADED, "quality degraded", "tab:orange", "D"),
    (names.RETRAIN_STARTED, "retrain started", "tab:blue", ">"),
    (names.RETRAIN_FINISHED, "retrain finished", "tab:blue", "s"),
    (names.ROLLOUT_DECISION, "rollout decision", "tab:green", "o"),
    ("registry", "registry stage", "tab:purple", "*"),
]


def png_base64(fig) -> str:
    """The figure as base64 PNG text; the figure is closed. Margins are fixed (room for the legend
    on the right) rather than ``bbox_inches="tight"``, which draws every figure twice."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def drift_plot(windows: list[dict], moved: list[tuple[str, str]] | None = None) -> str | None:
    """Every checked window as a point at its end time: its smallest p-value (log scale), green when
    clean and red when it drifted, one marker shape per version; thin lines follow the p-values of the
    ``moved`` (version, feature) pairs over that version's windows; the dashed line is the threshold."""
    timed = [w for w in windows if w["time"] is not None]
    if not timed:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    fig.subplots_adjust(**MARGINS)
    for k, (version, feature) in enumerate(moved or []):
        points = [
            (w["time"], w["p_values"][feature])
            for w in timed
            if w["version"] == version and w["p_values"].get(feature) is not None
        ]
        if points:
            ax.plot(
                [t for t, _ in points],
                [max(p, P_FLOOR) for _, p in points],
                color=FEATURE_COLOURS[k % len(FEATURE_COLOURS)],
                lw=1,
                alpha=0.8,
                label=f"v{version} {feature} p-value",
            )
    versions = sorted({w["version"] for w in timed}, key=lambda v: (len(v), v))
    for k, version in enumerate(versions):
        marker = VERSION_MARKERS[k % len(VERSION_MARKERS)]
        for drifted, colour, verdict in ((False, CLEAN, "clean"), (True, DRIFTED, "drifted")):
            points = [(w["time"], _smallest(w)) for w in timed if w["version"] == version and w["is_drift"] == drifted]
            if points:
                ax.scatter(
                    [t for t, _ in points],
                    [max(p, P_FLOOR) if p is not None else 1.0 for _, p in points],
                    color=colour,
                    marker=marker,
                    s=28,
                    zorder=3,
                    label=f"v{version} {verdict} ({len(points)})",
                )
    thresholds = [(w["time"], w["threshold"]) for w in timed if w["threshold"] is not None]
    if thresholds:
        thresholds.sort()
        ax.step(
            [t for t, _ in thresholds],
            [v for _, v in thresholds],
            where="post",
            color="black",
            linestyle="--",
            lw=1,
            label="threshold",
        )
    ax.set_yscale("log")
    ax.set_ylabel("smallest p-value (log)")
    ax.set_title("Feature drift: every checked window (below the threshold = drifted)", y=1.02)
    _time_axis(ax, [w["time"] for w in timed])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png_base64(fig)


def distribution_plot(item: dict) -> str | None:
    """One feature's drift reference against the values served in its drifted windows: overlaid
    histograms (numeric) or side-by-side shares per category (categorical), as fractions of each side."""
    reference, live = item["reference"], item["live"]
    if not reference or not live:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH / 2, 2.6))
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.2, top=0.84)
    labels = (f"reference ({len(reference)} rows)", f"served ({len(live)} rows)")
    if item["kind"] == "categorical":
        names = [c for c in item["categories"] if c in set(reference) | set(live)]
        xs = range(len(names))
        for offset, values, colour, label in ((-0.2, reference, REFERENCE, labels[0]), (0.2, live, LIVE, labels[1])):
            share = [values.count(n) / len(values) for n in names]
            ax.bar([x + offset for x in xs], share, width=0.4, color=colour, label=label)
        ax.set_xticks(list(xs), names, fontsize=7)
    else:
        low, high = min(min(reference), min(live)), max(max(reference), max(live))
        bins = 30 if high > low else 1
        for values, colour, label in ((reference, REFERENCE, labels[0]), (live, LIVE, labels[1])):
            weights = [1 / len(values)] * len(values)
            ax.hist(values, bins=bins, range=(low, high), weights=weights, color=colour, alpha=0.55, label=label)
    ax.set_ylabel("share of rows", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"v{item['version']} {item['feature']}: reference vs served", fontsize=9)
    ax.legend(fontsize=7)
    return png_base64(fig)


def _smallest(window: dict) -> float | None:
    finite = [p for p in window["p_values"].values() if p is not None]
    return min(finite) if finite else None


SIGNAL_COLOURS = {"ok": CLEAN, "alert": DRIFTED, "insufficient": "#b0b0b0"}  # a window's result per signal


def signal_plot(windows: list[dict]) -> str | None:
    """One lane per signal and version (``kfloop.report.data.drift_windows`` rows with their ``signals``):
    a mark at each window's end time, green when ok, red when it alerted, grey with too few rows."""
    from kfloop.names import SIGNALS

    order = {name: k for k, name in enumerate(SIGNALS)}
    marks: dict[tuple[str, str], list[tuple[dt.datetime, str]]] = {}
    for w in windows:
        for result in w.get("signals") or ():
            if w["time"] is not None:
                marks.setdefault((result["signal"], w["version"]), []).append((w["time"], result["status"]))
    if not marks:
        return None
    lanes = sorted(marks, key=lambda lane: (order.get(lane[0], len(order)), len(lane[1]), lane[1]))
    height = 1.0 + 0.32 * len(lanes)
    fig, ax = plt.subplots(figsize=(WIDTH, height))
    fig.subplots_adjust(left=0.2, right=MARGINS["right"], bottom=0.55 / height + 0.05, top=1 - 0.35 / height)
    for status, colour in SIGNAL_COLOURS.items():
        xs = [t for lane in lanes for t, s in marks[lane] if s == status]
        ys = [row for row, lane in enumerate(lanes) for _, s in marks[lane] if s == status]
        if xs:
            ax.scatter(xs, ys, color=colour, marker="s", s=30, zorder=3, label=f"{status} ({len(xs)})")
    ax.set_yticks(range(len(lanes)), [f"{signal} v{version}" for signal, version in lanes], fontsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Every signal's result per window", y=1.0, fontsize=10)
    _time_axis(ax, [t for lane in lanes for t, _ in marks[lane]])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png_base64(fig)


def timeline_plot(points: list[tuple[dt.datetime, str]]) -> str | None:
    """Events as markers on one lane per kind (``points`` are (time, lane key) pairs)."""
    lanes = [lane for lane in LANES if any(key == lane[0] for _, key in points)]
    if not lanes:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH, 1.2 + 0.45 * len(lanes)))
    fig.subplots_adjust(left=0.16, right=0.95, bottom=0.6 / (1.2 + 0.45 * len(lanes)) + 0.08, top=0.88)
    for row, (key, _label, color, marker) in enumerate(lanes):
        times = [t for t, k in points if k == key]
        ax.scatter(times, [row] * len(times), color=color, marker=marker, s=60, zorder=3)
    ax.set_yticks(range(len(lanes)), [lane[1] for lane in lanes])
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Timeline of the loop", y=1.02)
    _time_axis(ax, [t for t, _ in points])
    return png_base64(fig)


def quality_plot(series: dict[str, list[tuple[dt.datetime, float]]], metric: str) -> str | None:
    """One line per series name (``"v2 measured"``, ``"v2 estimated (CBPE)"`` ...) of ``metric`` over time."""
    series = {name: pts for name, pts in series.items() if pts}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    fig.subplots_adjust(**MARGINS)
    colors: dict[str, str] = {}
    for name, points in sorted(series.items()):
        color = colors.setdefault(name.split()[0], f"C{len(colors) % 10}")  # one colour per version
        style = "--" if "estimated" in name else "-"
        ax.plot([t for t, _ in points], [v for _, v in points], style, color=color, marker="o", ms=4, label=name)
    ax.set_ylabel(metric)
    ax.set_title(f"Live quality per version: {metric} per window", y=1.02)
    _time_axis(ax, [t for pts in series.values() for t, _ in pts])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png_base64(fig)


def traffic_plot(split: dict) -> str | None:
    """Stacked share of requests per ``<revision> v<version>`` in each time bucket (``report_data.traffic``)."""
    starts, series = split["starts"], split["series"]
    if not starts:
        return None
    totals = [sum(col) or 1 for col in zip(*series.values())]
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    fig.subplots_adjust(**MARGINS)
    bottom = [0.0] * len(starts)
    for label, counts in series.items():
        share = [100.0 * c / t for c, t in zip(counts, totals)]
        ax.bar(starts, share, width=split["width_s"] / 86400 * 0.95, bottom=bottom, align="edge", label=label)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of requests")
    ax.set_title(f"Traffic split per {split['bucket']} bucket", y=1.02)
    _time_axis(ax, [*starts, starts[-1] + dt.timedelta(seconds=split["width_s"])])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png_base64(fig)


def _time_axis(ax, times: list[dt.datetime]) -> None:
    """Dates on the x axis, fitted to ``times`` with a 3% margin (a single instant gets ``MIN_SPAN``)."""
    low, high = min(times), max(times)
    margin = (high - low) * 0.03 if high > low else MIN_SPAN / 2
    ax.set_xlim(low - margin, high + margin)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")

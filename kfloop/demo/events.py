"""The demo's reading of the loop's events: one line of text for each event worth showing.

Pure functions over CloudEvents as they are kept in the event log (``kfloop.store.event_log``): a drift
window (which feature moved most, and its p-value), a retraining run started or finished, a
quality degradation, a canary analysis decision with the checks that decided it.
"""

from __future__ import annotations


def data_of(event: dict) -> dict:
    return event.get("data") if isinstance(event.get("data"), dict) else {}


def drift_window(event: dict) -> tuple[int | None, str | None, float | None, str | None]:
    """``(window index, most drifted feature, its p-value, model version)`` of a drift event."""
    outer = data_of(event)
    inner = outer.get("data") if isinstance(outer.get("data"), dict) else outer
    p_values = {k: v for k, v in (inner.get("p_val_by_feature") or {}).items() if isinstance(v, (int, float))}
    feature = min(p_values, key=p_values.get) if p_values else None
    version = outer.get("model_version")
    return inner.get("window_index"), feature, p_values.get(feature), None if version is None else str(version)


def is_drift(event: dict) -> bool:
    outer = data_of(event)
    inner = outer.get("data") if isinstance(outer.get("data"), dict) else outer
    return bool(inner.get("is_drift"))


def drift_text(event: dict) -> str:
    window, feature, p, version = drift_window(event)
    where = f"window {window}" + (f" of v{version}" if version else "")
    return f"drift detected in {where} ({feature} p={p:.1g})" if feature else f"drift detected in {where}"


def run_started_text(data: dict, rows: dict | None = None) -> str:
    """``retraining run started (...)``: why, and what it trains on (``rows``: the trigger's
    ``original_rows`` and ``captured_rows`` of the run's data, when known)."""
    rows = rows or {}
    what = f"{data.get('strategy')} data"
    if rows.get("original_rows") is not None and rows.get("captured_rows") is not None:
        what += f": {rows['original_rows']} original + {rows['captured_rows']} labeled served rows"
    elif data.get("rows"):
        what += f": {data['rows']} rows"
    reference = None
    if rows.get("drift_reference"):
        reference = f"drift reference: the {rows.get('reference_rows')} rows served since the drifted window began"
    elif rows.get("reference_note"):
        reference = f"drift reference: {rows['reference_note']}"
    parts = (data.get("reason"), what, reference)
    return "retraining run started (" + "; ".join(p for p in parts if p) + ")"


def windows_text(summaries: list[dict]) -> str:
    """``drift windows checked: v1 126 (123 drifted), v2 109 (4 drifted, 3.7%)``, from the window summaries."""
    counts: dict[str, list[int]] = {}
    for s in summaries:
        seen = counts.setdefault(str(s.get("model_version")), [0, 0])
        seen[0] += 1
        seen[1] += bool(s.get("is_drift"))
    parts = [
        f"v{v} {n} ({d} drifted, {100 * d / n:.1f}%)"
        for v, (n, d) in sorted(counts.items(), key=lambda kv: (len(kv[0]), kv[0]))
    ]
    return "drift windows checked: " + (", ".join(parts) if parts else "none recorded")


def quality_text(data: dict) -> str:
    metric, value, threshold = data.get("metric"), data.get("value"), data.get("threshold")
    version = data.get("model_version")
    if isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
        return (
            f"quality degraded: v{version} {metric} {value:.2f} < {threshold:.2f} "
            f"on labeled window {data.get('window_index')}"
        )
    return f"quality degraded: v{version} {metric}"


def failed_checks(data: dict) -> list[str]:
    """The failed checks of a rollout decision as ``"prediction divergence 0.41 > 0.25"``."""
    return [
        _compared(c, passed=False)
        for c in data.get("metrics") or []
        if isinstance(c, dict) and c.get("passed") is False and c.get("metric") != "requests"
    ]


def passed_checks(data: dict) -> list[str]:
    """The checks a passed step measured, as ``"prediction divergence 0.04 <= 0.25"``."""
    return [
        _compared(c, passed=True)
        for c in data.get("metrics") or []
        if isinstance(c, dict) and c.get("passed") is True and c.get("metric") != "requests"
    ]


def _compared(check: dict, passed: bool) -> str:
    """A check as ``name value op limit``; the operator follows the metric's direction."""
    from kfloop.training.evaluate import HIGHER_IS_BETTER

    name = str(check.get("metric"))
    measure = check.get("measure") if name == "quality" else None
    higher = bool(HIGHER_IS_BETTER.get(measure)) if measure else False
    op = (">=" if passed else "<") if higher else ("<=" if passed else ">")
    label = name.replace("_", " ") + (f" ({measure})" if measure else "")
    return f"{label} {_num(check.get('canary'))} {op} {_num(check.get('threshold'))}"


def decision_text(data: dict) -> str:
    """One line about a rollout decision event's data."""
    version, percent, verdict = data.get("canary_version"), data.get("percent"), data.get("verdict")
    if verdict == "passed":
        return f"canary v{version} at {percent}%: step passed ({'; '.join(passed_checks(data)) or data.get('reason')})"
    if verdict in ("rolled-back", "rolled_back", "rollback"):
        why = "; ".join(failed_checks(data)) or data.get("reason")
        return f"v{version} rolled back at {percent}%: {why}"
    if verdict in ("promoted", "promote"):
        return f"v{version} promoted: production (v{data.get('stable_version')} archived)"
    return f"canary v{version} at {percent}%: {verdict}: {data.get('reason')}"


def _num(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)

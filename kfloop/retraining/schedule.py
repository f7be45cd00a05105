"""Retraining on a calendar: the schedule of a KFP recurring run, checked before anything is called.

``parse_cron`` accepts a standard 5-field cron expression (``MIN HOUR DOM MON DOW``, given a
seconds field of 0), the 6-field form KFP's scheduler reads (robfig/cron: ``SEC MIN HOUR DOM MON
DOW``) or a descriptor (``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``,
``@yearly``/``@annually``), and returns the 6-field expression. Fields: ``*``, ``?`` (day fields
only), numbers, names (``JAN``-``DEC``, ``SUN``-``SAT``), ranges ``a-b``, steps ``/n`` and lists.
``parse_every`` reads a duration such as ``90m``, ``6h``, ``1d``, ``1h30m`` or ``2w`` into seconds
(at least ``MIN_INTERVAL_SECONDS``). Anything else is a ``ConfigError`` naming the bad part.
"""

from __future__ import annotations

import re

from kfloop.errors import ConfigError

MIN_INTERVAL_SECONDS = 60
DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
# (name, lowest, highest, names, whether '?' is allowed), in the 6-field order
_FIELDS = (
    ("second", 0, 59, {}, False),
    ("minute", 0, 59, {}, False),
    ("hour", 0, 23, {}, False),
    ("day of month", 1, 31, {}, True),
    ("month", 1, 12, _MONTHS, False),
    ("day of week", 0, 6, _DAYS, True),
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)([smhdw])")


def parse_cron(expression: str) -> str:
    """The 6-field expression KFP reads for ``expression`` (5 or 6 fields, or a descriptor)."""
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigError(f"cron expression {expression!r} is empty")
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in DESCRIPTORS:
            raise ConfigError(
                f"cron expression {expression!r}: unknown descriptor; use one of {', '.join(DESCRIPTORS)}"
            )
        return DESCRIPTORS[text.lower()]
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ConfigError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5 (MIN HOUR DOM MON DOW) "
            "or 6 (SEC MIN HOUR DOM MON DOW)"
        )
    for value, spec in zip(fields, _FIELDS):
        _check_field(expression, value, *spec)
    return " ".join(fields)


def _check_field(expression: str, field: str, name: str, low: int, high: int, names: dict, question: bool) -> None:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"cron expression {expression!r}: {name} field {field!r} {why}")

    if field == "?":
        if not question:
            raise bad("cannot be '?' (only the day fields can)")
        return
    for item in field.split(","):
        base, slash, step = item.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            raise bad(f"has a bad step {step!r}: expected a whole number >= 1")
        if base == "*":
            continue
        ends = base.split("-")
        if len(ends) > 2 or not all(ends):
            raise bad(f"has a bad range {base!r}")
        values = [_value(e, names) for e in ends]
        for raw, v in zip(ends, values):
            if v is None:
                raise bad(f"has {raw!r}, which is not a number{' or a name' if names else ''}")
            if not low <= v <= high:
                raise bad(f"has {raw!r}, outside {low}-{high}")
        if len(values) == 2 and values[0] > values[1]:
            raise bad(f"has the range {base!r}, which runs backwards")


def _value(text: str, names: dict) -> int | None:
    if text.isdigit():
        return int(text)
    return names.get(text.upper())


def parse_every(duration: str) -> int:
    """Seconds in ``duration`` (``30m``, ``6h``, ``1d``, ``1h30m``...): at least ``MIN_INTERVAL_SECONDS``."""
    text = duration.strip().lower() if isinstance(duration, str) else ""
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ConfigError(
            f"duration {duration!r} is not valid: use whole numbers with units s, m, h, d, w (e.g. 30m, 6h, 1d, 1h30m)"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < MIN_INTERVAL_SECONDS:
        raise ConfigError(f"duration {duration!r} is {seconds}s; a schedule runs at most every {MIN_INTERVAL_SECONDS}s")
    return seconds

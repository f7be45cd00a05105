"""Times as they cross processes: RFC 3339 in UTC with a ``Z`` suffix, formatted and parsed here only.

``rfc3339`` writes microseconds (``2026-12-01T21:23:02.123456Z``); ``parse_time`` reads any RFC 3339
time, with or without a fraction of 1 to 9 digits (Go producers such as Knative send nanoseconds,
which Python 3.10's ``datetime.fromisoformat`` refuses) and with ``Z``/``z`` or a numeric offset.
``key_stamp`` is the compact form used inside object keys, which sorts as the times do.

A leaf: imports nothing from kfloop.
"""

from __future__ import annotations

import datetime as dt
import re

UTC = dt.timezone.utc
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-]\d{2}:\d{2}))?$")


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def rfc3339(when: dt.datetime | float | None = None) -> str:
    """``when`` (a datetime, epoch seconds, or now when None) as RFC 3339 UTC with microseconds."""
    if when is None:
        when = now()
    elif not isinstance(when, dt.datetime):
        when = dt.datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_millis(when: dt.datetime | None = None) -> str:
    """``2026-12-01T21:23:02.123+00:00``: the registry's times, in the form they were first stored in."""
    return (when or now()).astimezone(UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> dt.datetime:
    """An aware UTC datetime from RFC 3339 text (a fraction of 1 to 9 digits, ``Z``/``z`` or an offset),
    or from any other ISO 8601 form ``datetime.fromisoformat`` reads (a date alone is its midnight); a
    time without an offset is taken as UTC. ValueError if ``text`` is neither."""
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    m = _RFC3339.match(text.strip())
    if m is not None:
        day, clock, fraction, _, offset = m.groups()
        micros = (fraction or "").ljust(6, "0")[:6]
        parsed = dt.datetime.fromisoformat(f"{day}T{clock}.{micros}{offset or '+00:00'}")
    else:
        parsed = dt.datetime.fromisoformat(text.strip())  # ValueError when it is not ISO 8601 either
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def epoch_seconds(text: str) -> float:
    return parse_time(text).timestamp()


def key_stamp(when: dt.datetime | None = None) -> str:
    """``20261201T212302123456Z``: a time inside an object key (sorts in time order)."""
    return (when or now()).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def day(when: dt.datetime | None = None) -> str:
    """``2026-12-01``: the UTC day of ``when`` (default now), as partitions name it."""
    return (when or now()).astimezone(UTC).strftime("%Y-%m-%d")

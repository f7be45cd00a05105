"""RFC 3339 times, formatted and parsed in one place (kfloop.timestamps)."""

import datetime as dt

import pytest

from kfloop.timestamps import UTC, epoch_seconds, key_stamp, parse_time, rfc3339


@pytest.mark.parametrize(
    "text, micros",
    [
        ("2026-12-01T21:23:02Z", 0),
        ("2026-12-01T21:23:02.5Z", 500000),
        ("2026-12-01T21:23:02.12Z", 120000),  # 1-2 digits: refused by Python 3.10's fromisoformat
        ("2026-12-01T21:23:02.123456Z", 123456),
        ("2026-12-01T21:23:02.123456789Z", 123456),  # nanoseconds, as Go producers (Knative) send
        ("2026-12-01t21:23:02.1234567z", 123456),
    ],
)
def test_every_fraction_length_parses(text, micros):
    when = parse_time(text)
    assert when.tzinfo is not None and when.utcoffset() == dt.timedelta(0)
    assert (when.hour, when.second, when.microsecond) == (21, 2, micros)


def test_offsets_are_converted_to_utc_and_a_missing_offset_is_utc():
    assert parse_time("2026-12-01T23:23:02+02:00") == dt.datetime(2026, 12, 1, 21, 23, 2, tzinfo=UTC)
    assert parse_time("2026-12-01T21:23:02") == dt.datetime(2026, 12, 1, 21, 23, 2, tzinfo=UTC)
    assert parse_time("2026-12-01") == dt.datetime(2026, 12, 1, tzinfo=UTC)  # other ISO 8601 forms too


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-12-01T25:00:00Z", None, 17])
def test_what_is_not_a_time_is_a_value_error(bad):
    with pytest.raises(ValueError):
        parse_time(bad)


def test_format_and_parse_round_trip_from_seconds_datetimes_and_other_zones():
    seconds = 1_796_000_000.123456
    text = rfc3339(seconds)
    assert text.endswith("Z") and len(text) == len("2026-12-01T21:23:02.123456Z")
    assert epoch_seconds(text) == pytest.approx(seconds, abs=1e-6)
    plus_two = dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rfc3339(plus_two) == "2026-12-01T21:00:00.000000Z"


def test_key_stamps_sort_as_the_times_do():
    times = [dt.datetime(2026, 1, d, h, tzinfo=UTC) for d in (9, 10) for h in (3, 11)]
    assert sorted(key_stamp(t) for t in reversed(times)) == [key_stamp(t) for t in times]

"""Cron expressions and durations of scheduled retraining (kfloop.retraining.schedule)."""

from __future__ import annotations

import pytest

from kfloop.errors import ConfigError
from kfloop.retraining.schedule import parse_cron, parse_every


@pytest.mark.parametrize(
    "expression, kfp",
    [
        ("0 3 * * *", "0 0 3 * * *"),  # 5 fields: seconds 0
        ("*/15 * * * *", "0 */15 * * * *"),
        ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),  # KFP's own example, 6 fields
        ("30 2 1,15 jan-jun MON-FRI", "0 30 2 1,15 jan-jun MON-FRI"),
        ("  0   4 * * SUN ", "0 0 4 * * SUN"),
        ("5/10 * * * * *", "5/10 * * * * *"),
        ("@daily", "0 0 0 * * *"),
        ("@Weekly", "0 0 0 * * 0"),
    ],
)
def test_valid_cron_expressions_become_kfp_six_field_expressions(expression, kfp):
    assert parse_cron(expression) == kfp


@pytest.mark.parametrize(
    "expression, message",
    [
        ("", "empty"),
        ("0 3 * *", "has 4 fields"),
        ("0 0 3 * * * *", "has 7 fields"),
        ("60 * * * *", "minute field '60' has '60', outside 0-59"),
        ("0 24 * * *", "hour field '24' has '24', outside 0-23"),
        ("0 3 0 * *", "day of month field '0'"),
        ("0 3 * 13 *", "month field '13'"),
        ("0 3 * * 7", "day of week field '7' has '7', outside 0-6"),
        ("0 3 * * FUNDAY", "'FUNDAY', which is not a number or a name"),
        ("0 3 * * 5-1", "runs backwards"),
        ("*/0 * * * *", "bad step '0'"),
        ("? * * * *", "cannot be '?'"),
        ("1-2-3 * * * *", "bad range"),
        ("0 3 * * ,", "bad range"),
        ("@sometimes", "unknown descriptor"),
        ("@every 1h", "unknown descriptor"),
    ],
)
def test_malformed_cron_expressions_are_refused_naming_the_part(expression, message):
    with pytest.raises(ConfigError, match="cron expression") as error:
        parse_cron(expression)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "text, seconds", [("90m", 5400), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("2w", 1209600), ("60s", 60)]
)
def test_durations(text, seconds):
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "1.5h", "-1h", "1 h", "1y", "1h30", "every 6h"])
def test_malformed_durations_are_refused(text):
    with pytest.raises(ConfigError, match="is not valid"):
        parse_every(text)


def test_too_short_an_interval_is_refused():
    with pytest.raises(ConfigError, match="'30s' is 30s"):
        parse_every("30s")

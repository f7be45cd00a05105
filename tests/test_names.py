"""The one check of external names (kfloop.names): what becomes a path or an object key stays one segment."""

import pytest

from kfloop import names
from kfloop.errors import InvalidRequest, RegistryError

HOSTILE = ["x/../../../../tmp/somewhere/F", "..", ".", "a/b", "a\\b", "\x00", "é", " ", "", "%2e%2e", "a" * 300]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_key_segment_never_leaves_its_folder(text):
    segment = names.key_segment(text)
    assert segment and "/" not in segment and "\\" not in segment and segment.strip(".")
    assert set(segment) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._=-")


def test_safe_segments_are_kept_as_they_are():
    for text in ("churn", "churn-2", "req-1:0".replace(":", "="), "v1.2_b"):
        assert names.key_segment(text) == text


@pytest.mark.parametrize("bad", [*HOSTILE, "Churn", "-churn", "churn-", "a" * 41, None, 3])
def test_invalid_model_names_are_refused_with_the_rule(bad):
    with pytest.raises(RegistryError, match="lowercase letters, digits and '-'"):
        names.validate_model_name(bad)


def test_valid_model_names_pass():
    for good in ("churn", "c", "fraud-v2", "a" * 40):
        assert names.validate_model_name(good) == good


def test_keys_are_built_from_safe_segments():
    assert names.event_key("churn", "x/../../etc") == "events/churn/x_.._.._etc.json"
    assert names.captures_prefix("churn", "3") == "captures/churn/3/"
    assert names.captures_prefix("../x") == "captures/.._x/"
    assert names.model_version_key("churn", 7) == "models/churn/versions/000007.json"
    assert names.auto_rollout_key("churn", 2) == "trigger/churn/rollouts/000002.json"
    assert names.auto_rollouts_prefix() == "trigger/"


def test_long_segments_keep_a_prefix_and_a_hash_of_the_whole():
    a, b = names.key_segment("a" * 300), names.key_segment("a" * 299 + "b")
    assert len(a) == names.MAX_SEGMENT_CHARS and a != b and a.startswith("a" * 100)
    assert names.key_segment("a" * 128) == "a" * 128
    assert len(names.run_name("churn", "x" * 500)) <= 120


@pytest.mark.parametrize("bad", ["x/../../../../tmp/F", "..", ".", "/abs", "a\\b", "a\x00b", "a\nb", "é", "", None, 7])
def test_hostile_event_ids_are_refused_naming_the_rule(bad):
    with pytest.raises(InvalidRequest, match="CloudEvent id"):
        names.validate_event_id(bad)


def test_event_and_request_ids_are_bounded():
    assert names.validate_event_id("0b6f2c1e-7a43-4c2d-9a7e-2f1d8c3b5a60.quality.2.0")
    assert names.validate_event_id("e" * names.MAX_EVENT_ID_BYTES)
    with pytest.raises(InvalidRequest, match="the limit is 256 bytes"):
        names.validate_event_id("e" * 257)
    assert names.validate_request_id("r" * names.MAX_REQUEST_ID_BYTES) == "r" * 256
    with pytest.raises(InvalidRequest, match="x-request-id is 8200 bytes long: the limit is 256 bytes"):
        names.validate_request_id("r" * 8200)
    with pytest.raises(InvalidRequest, match="not printable ASCII"):
        names.validate_request_id("a\tb")


def test_run_names_are_one_safe_segment():
    assert names.run_name("churn", "x/../../etc") == "kfloop-churn-x_.._.._etc"

"""The control token (kfloop.auth): written readable by its owner only, read back, compared, signed."""

import os
import stat

import pytest

from kfloop import auth
from kfloop.errors import ConfigError


def test_a_written_token_is_new_owner_only_and_reads_back(tmp_path):
    path = tmp_path / "home" / "control-token"
    os.umask(0o022)
    first = auth.write_token(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.read_token(path) == first and len(first) >= 40
    second = auth.write_token(path)
    assert second != first and auth.read_token(path) == second
    assert [p.name for p in path.parent.iterdir()] == ["control-token"]  # no temporary file left
    assert auth.ensure_token(path) == second


def test_missing_and_empty_token_files(tmp_path):
    assert auth.read_token(tmp_path / "none") is None
    assert auth.TokenFile(tmp_path / "none").headers() == {} and auth.TokenFile(None).headers() == {}
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        auth.read_token(tmp_path / "empty")
    made = auth.ensure_token(tmp_path / "made")
    assert auth.TokenFile(tmp_path / "made").headers() == {"authorization": f"Bearer {made}"}


@pytest.mark.parametrize(
    "header, ok",
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer  s3cret ", True),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("", False),
        (None, False),
        ("Bearer é", False),
    ],
)
def test_only_the_bearer_token_matches(header, ok):
    assert auth.token_matches(header, "s3cret") is ok


def test_signatures_need_the_token_and_the_value():
    signature = auth.sign("t", "canary")
    assert auth.signature_matches("t", "canary", signature)
    assert not auth.signature_matches("t", "stable", signature)
    assert not auth.signature_matches("other", "canary", signature)
    assert not auth.signature_matches(None, "canary", signature)
    assert not auth.signature_matches("t", "canary", None)
    assert not auth.signature_matches("t", "canary", "é")

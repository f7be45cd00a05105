"""Object stores: same behaviour on a local folder and on S3; sealed JSON detects tampering."""

from __future__ import annotations

import pytest

from kfloop.errors import ChecksumError, ConfigError, ObjectNotFound, StorageError
from kfloop.store.objects import LocalStore, S3Store, get_json, put_json, seal_json, unseal_json


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return S3Store.from_settings(request.getfixturevalue("s3_settings"))


def test_put_get_list_delete(store, tmp_path):
    store.put("a/b/one.txt", b"1")
    store.put("a/two.txt", b"2")
    assert store.get("a/b/one.txt") == b"1"
    assert store.list("a/") == ["a/b/one.txt", "a/two.txt"]
    assert store.exists("a/two.txt") and not store.exists("a/none")
    store.delete("a/two.txt")
    assert store.list("a/") == ["a/b/one.txt"]
    with pytest.raises(ObjectNotFound):
        store.get("a/two.txt")


def test_put_if_absent_creates_once(store):
    assert store.put_if_absent("k", b"first")
    assert not store.put_if_absent("k", b"second")
    assert store.get("k") == b"first"


def test_files_round_trip(store, tmp_path):
    (tmp_path / "in.bin").write_bytes(b"\x00" * 1000)
    store.put_file("f/in.bin", tmp_path / "in.bin")
    store.get_file("f/in.bin", tmp_path / "out" / "in.bin")
    assert (tmp_path / "out" / "in.bin").read_bytes() == b"\x00" * 1000


def test_sealed_json_round_trips_and_detects_changes(store):
    put_json(store, "doc.json", {"a": 1, "b": [1, 2]})
    assert get_json(store, "doc.json") == {"a": 1, "b": [1, 2]}
    store.put("doc.json", store.get("doc.json").replace(b'"a": 1', b'"a": 2'))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        get_json(store, "doc.json")


def test_unsealed_or_broken_json_is_refused():
    with pytest.raises(ChecksumError):
        unseal_json(b'{"a": 1}', "x")
    with pytest.raises(ChecksumError, match="not valid JSON"):
        unseal_json(b"{", "x")
    assert unseal_json(seal_json({"a": 1}), "x") == {"a": 1}


def test_local_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(StorageError, match="escapes"):
        LocalStore(tmp_path / "root").put("../outside", b"x")


def test_invalid_bucket_name_is_a_config_error(s3_settings):
    with pytest.raises(ConfigError):
        S3Store.from_settings(s3_settings, bucket="ab")

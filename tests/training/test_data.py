"""Loading raw data from samples, local files and S3 (a real moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from kfloop.config import Settings
from kfloop.errors import ConfigError, DataError, StorageError
from kfloop.store.objects import S3Store
from kfloop.training.data import load_source
from kfloop.training.samples import churn
from tests.conftest import free_port, wait_for_port


@pytest.fixture
def frame() -> pd.DataFrame:
    return churn(200, seed=5)


def test_sample_source_and_its_digest(local_settings):
    a = load_source("sample:churn?n_rows=300&seed=2", local_settings)
    b = load_source("sample:churn?seed=2&n_rows=300", local_settings)
    c = load_source("sample:churn?n_rows=300&seed=3", local_settings)
    pd.testing.assert_frame_equal(a.frame, churn(300, seed=2))
    assert a.sha256 == b.sha256 != c.sha256
    assert a.uri.startswith("sample:churn?") and "seed=2" in a.uri
    expected = hashlib.sha256(f"{a.uri.removeprefix('sample:')}\n300".encode()).hexdigest()
    assert a.sha256 == expected


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_local_files_round_trip(tmp_path, frame, local_settings, suffix):
    path = tmp_path / f"data{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    loaded = load_source(str(path), local_settings)
    pd.testing.assert_frame_equal(loaded.frame, frame)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.uri == path.resolve().as_uri()
    assert load_source(path.as_uri(), local_settings).sha256 == loaded.sha256


def test_column_names_are_stripped(tmp_path, local_settings):
    path = tmp_path / "spaces.csv"
    path.write_text(" a ,b\t\n1,2\n3,4\n")
    assert list(load_source(str(path), local_settings).frame.columns) == ["a", "b"]


def test_column_names_that_collide_after_stripping(tmp_path, local_settings):
    path = tmp_path / "twins.csv"
    path.write_text("a, a\n1,2\n")
    with pytest.raises(DataError, match="repeated column"):
        load_source(str(path), local_settings)


def test_missing_file_names_the_path(tmp_path, local_settings):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="nope.csv"):
        load_source(str(path), local_settings)


@pytest.mark.parametrize("source", ["data.json", "data", "ftp://host/data.csv"])
def test_unsupported_sources(tmp_path, local_settings, source):
    with pytest.raises(ConfigError):
        load_source(source, local_settings)


@pytest.mark.parametrize(
    "name, content",
    [
        ("corrupt.parquet", b"PAR1 this is not parquet at all"),
        ("binary.csv", bytes(range(256)) * 4),
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6\n"),
    ],
)
def test_corrupt_files_are_data_errors(tmp_path, local_settings, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=name):
        load_source(str(path), local_settings)


@pytest.mark.parametrize(
    "name, write",
    [
        ("zero.csv", lambda p: p.write_bytes(b"")),
        ("header.csv", lambda p: p.write_text("a,b\n")),
        ("empty.parquet", lambda p: pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(p)),
    ],
)
def test_empty_data_has_no_rows(tmp_path, local_settings, name, write):
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError, match="no rows"):
        load_source(str(path), local_settings)


def test_s3_needs_an_endpoint(local_settings):
    with pytest.raises(ConfigError, match="S3 endpoint"):
        load_source("s3://bucket/data.csv", local_settings)


@pytest.mark.parametrize("source", ["s3://bucket-only", "s3://bucket/data.txt", "s3://ab/data.csv"])
def test_bad_s3_sources(s3_settings, source):
    with pytest.raises(ConfigError):
        load_source(source, s3_settings)


def test_s3_csv_and_parquet(s3_settings, frame, tmp_path):
    store = S3Store.from_settings(s3_settings)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    for name in ("d.csv", "d.parquet"):
        store.put_file(f"raw/{name}", tmp_path / name)
        loaded = load_source(f"s3://{s3_settings.s3_bucket}/raw/{name}", s3_settings)
        pd.testing.assert_frame_equal(loaded.frame, frame)
        assert loaded.sha256 == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert loaded.uri == f"s3://{s3_settings.s3_bucket}/raw/{name}"


def test_s3_missing_object_is_a_storage_error(s3_settings):
    S3Store.from_settings(s3_settings)
    with pytest.raises(StorageError, match="missing.csv"):
        load_source(f"s3://{s3_settings.s3_bucket}/missing.csv", s3_settings)


def test_s3_corrupt_object_is_a_data_error(s3_settings):
    S3Store.from_settings(s3_settings).put("bad.parquet", b"garbage")
    with pytest.raises(DataError, match="bad.parquet"):
        load_source(f"s3://{s3_settings.s3_bucket}/bad.parquet", s3_settings)


def test_unreachable_s3_endpoint_fails_fast(tmp_path):
    settings = Settings(home=tmp_path, s3_endpoint=f"127.0.0.1:{free_port()}", s3_access_key="a", s3_secret_key="b")
    start = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach"):
        load_source("s3://bucket/data.csv", settings)
    assert time.monotonic() - start < 10


@pytest.fixture(scope="module")
def auth_s3():
    """A moto server that checks credentials, with one IAM user allowed to use S3; yields its settings."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # the 3 IAM calls below, then auth is enforced
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        iam = boto3.client(
            "iam",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="loader")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="loader", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="loader")["AccessKey"]
        yield Settings(
            s3_endpoint=f"127.0.0.1:{port}",
            s3_access_key=key["AccessKeyId"],
            s3_secret_key=key["SecretAccessKey"],
            s3_bucket="auth-data",
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_wrong_credentials_are_a_storage_error(auth_s3, frame):
    S3Store.from_settings(auth_s3).put("d.csv", frame.to_csv(index=False).encode())
    assert len(load_source("s3://auth-data/d.csv", auth_s3).frame) == len(frame)
    with pytest.raises(StorageError, match="credentials"):
        load_source("s3://auth-data/d.csv", auth_s3.replace(s3_secret_key="wrong-secret"))
    with pytest.raises(StorageError, match="credentials"):
        load_source("s3://auth-data/d.csv", auth_s3.replace(s3_access_key="AKIAWRONGKEY0000000"))

"""Shared fixtures: a real S3-compatible server (moto's server mode) on 127.0.0.1, and settings
that point kfloop at a temporary home folder or at that server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kfloop.config import Settings
from kfloop.processes import free_port  # noqa: F401 (tests import it from here)

REPO = Path(__file__).resolve().parents[1]  # the repository's root


def wait_for(condition, timeout: float = 30.0, what: str = "condition", interval: float = 0.02):
    """Poll ``condition()`` until it is truthy and return its value; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def pytest_collection_modifyitems(items):
    """Tests that use a process-starting fixture (the S3 server) carry the marker ``processes`` too."""
    for item in items:
        if "s3_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.processes)


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server process on 127.0.0.1; yields its endpoint ``127.0.0.1:PORT``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def local_settings(tmp_path) -> Settings:
    """Settings whose registry and state live in a fresh temporary folder."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
def s3_settings(s3_server, tmp_path) -> Settings:
    """Settings that point at a fresh bucket on the moto server (the same code path as MinIO)."""
    return Settings(
        home=tmp_path / "home",
        s3_endpoint=s3_server,
        s3_access_key="test-access",
        s3_secret_key="test-secret",
        s3_bucket=f"kfloop-{uuid.uuid4().hex[:12]}",
    )

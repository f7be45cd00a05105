"""Fixtures for serving tests: small model bundles trained here, and server processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.fakes.bundles import build_bundle, churn_frame


@pytest.fixture(scope="session")
def churn_bundle(tmp_path_factory):
    """A binary churn model with a categorical feature."""
    return build_bundle(tmp_path_factory.mktemp("bundles") / "churn", churn_frame(), "churned")


@pytest.fixture(scope="session")
def numeric_bundle(tmp_path_factory):
    """A binary model on numeric features only (accepts a single V2 tensor)."""
    return build_bundle(tmp_path_factory.mktemp("bundles") / "numeric", churn_frame(categorical=False), "churned")


class ServerProcess:
    """``python -m <module> <args>`` in its own process group (nothing it starts outlives the test),
    its output in a temporary file (a full pipe would block it); ready once ``ready_path`` answers 200."""

    def __init__(self, module: str, args: list[str], port: int, ready_path: str, env: dict | None = None):
        self.port, self.url, self.ready_path = port, f"http://127.0.0.1:{port}", ready_path
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout: float = 90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.url} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.url} not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def terminate(self) -> None:
        """SIGTERM to the server (which stops what it started itself)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, and SIGKILL to the whole group if it has not exited after ``timeout``; returns the
        exit status."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


class PredictorProcess(ServerProcess):
    """A ``python -m kfloop.serving.model_servers.predictor`` process on 127.0.0.1; ``url`` is its base URL."""

    def __init__(self, model_dir: Path, model_name: str, *extra: str, grpc: bool = False):
        self.model_name = model_name
        self.grpc_port = free_port() if grpc else None
        grpc_args = (
            ["--enable_grpc", "true", "--grpc_port", str(self.grpc_port)] if grpc else ["--enable_grpc", "false"]
        )
        port = free_port()
        super().__init__(
            "kfloop.serving.model_servers.predictor",
            ["--model_dir", str(model_dir), "--model_name", model_name, "--http_port", str(port), *grpc_args, *extra],
            port,
            f"/v2/models/{model_name}/ready",
        )


def start_predictors(*procs: PredictorProcess) -> list[PredictorProcess]:
    """Wait until the started predictors are all ready (stopping all of them on failure)."""
    try:
        for p in procs:
            p.wait_ready()
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return list(procs)

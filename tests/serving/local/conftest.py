"""What the tests of the local platform share: ``kfloop serve`` as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from kfloop.auth import bearer, read_token
from kfloop.names import CONTROL_TOKEN_FILE
from tests.conftest import free_port


def clean_env() -> dict[str, str]:
    """This environment without KFLOOP_* settings (S3 endpoints, another home)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KFLOOP_")}


class ServeProcess:
    """``kfloop serve`` as a subprocess; its output is collected by a thread (so the pipe never fills)."""

    def __init__(self, home: Path, *args: str, seed: int = 7):
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.banner = threading.Event()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kfloop.cli",
                "--home",
                str(home),
                "serve",
                "--port",
                str(self.port),
                "--seed",
                str(seed),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.banner.wait(90):
            self.kill()
            raise AssertionError("kfloop serve did not start:\n" + self.output())

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "Ctrl-C" in line:
                self.banner.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def token_file(self) -> Path:
        """The control token kfloop serve wrote at start."""
        return self.home / CONTROL_TOKEN_FILE

    @property
    def auth(self) -> dict[str, str]:
        return bearer(read_token(self.token_file))

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def interrupt(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        for child in self.children() if self.proc.poll() is None else []:
            child.kill()
        self.proc.kill()
        self.proc.wait()

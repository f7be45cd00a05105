"""A revision: one registered model version served by local processes on 127.0.0.1.

Like a KServe revision's pod, a revision is a predictor process (``kfloop.serving.model_servers.predictor``)
and, unless disabled or not installed, the drift transformer (``kfloop.serving.model_servers.transformer``)
in front of it; the gateway sends requests to the front one. Each process runs in its own
session (process group) on a free port, logs to a file, and is asked to die with its parent
(Linux ``PR_SET_PDEATHSIG``) so not even a killed ``kfloop serve`` leaves it behind. Stopping is
SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from kfloop import processes
from kfloop.errors import KfloopError
from kfloop.processes import GRACE_SECONDS, free_port

READY_PATH = "/v2/models/{name}/ready"


class ServerProcess:
    """One server process in its own process group, on ``port``, writing to ``log_path``."""

    def __init__(self, kind: str, args: list[str], port: int, log_path: Path, env: dict[str, str]):
        self.kind, self.port, self.log_path, self.env = kind, port, Path(log_path), env
        self.cmd = [
            sys.executable,
            "-m",
            f"kfloop.serving.model_servers.{kind}",
            *args,
            "--http_host",
            "127.0.0.1",  # reachable through the gateway only (KServe itself listens on every address)
            "--http_port",
            str(port),
            "--enable_grpc",
            "false",
        ]
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (or restart) the process. Call it from one long-lived thread: the child is
        signalled when the thread that started it exits."""
        self.proc = processes.spawn(self.cmd, self.log_path, self.env)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exit_code(self) -> int | None:
        """None while running (or never started), else the exit code (negative: killed by that signal)."""
        return self.proc.poll() if self.proc else None

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            processes.signal_group(self.proc.pid, sig)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Revision:
    """Version ``version`` of ``model``: a predictor, and a transformer in front when ``transformer``."""

    def __init__(
        self,
        model: str,
        version: int,
        bundle_dir: Path,
        log_dir: Path,
        *,
        label: str,
        transformer: bool,
        env: dict[str, str],
        predictor_args: tuple[str, ...] = (),
        transformer_args: tuple[str, ...] = (),
        journal_dir: Path | None = None,
    ):
        self.model, self.version = model, version
        logs, common = (
            Path(log_dir),
            ["--model_dir", str(bundle_dir), "--model_name", model, "--model_version", str(version)],
        )
        self.predictor = ServerProcess(
            "predictor", [*common, *predictor_args], free_port(), logs / f"v{version}-predictor.log", env
        )
        self.processes = [self.predictor]
        if transformer:
            args = [
                *common,
                "--predictor_host",
                f"127.0.0.1:{self.predictor.port}",
                "--predictor_protocol",
                "v1",
                "--revision",
                label,
                *(["--capture_journal", str(journal_dir)] if journal_dir is not None else []),
                *transformer_args,
            ]
            self.processes.append(
                ServerProcess("transformer", args, free_port(), logs / f"v{version}-transformer.log", env)
            )
        self.url = self.processes[-1].url
        self.healthy, self.reason = False, "starting"
        self.restarts, self.next_restart, self.requests, self.failures = 0, 0.0, 0, 0

    def start(self) -> None:
        for p in self.processes:
            p.start()

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Wait until every process answers its model's ready endpoint; raise if one exits or the time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.exit_code() is not None:
                    hint = " (serve without it: --no-transformer)" if p.kind == "transformer" else ""
                    raise KfloopError(
                        f"{p.kind} of {self.model} v{self.version} exited with code {p.exit_code()} "
                        f"before it was ready{hint}; last lines of {p.log_path}:\n{p.log_tail()}"
                    )
            if await self.check(client):
                self.healthy, self.reason = True, ""
                return
            await asyncio.sleep(0.1)
        raise KfloopError(
            f"{self.model} v{self.version} was not ready after {timeout:.0f}s; see the logs "
            f"{', '.join(str(p.log_path) for p in self.processes)}"
        )

    async def check(self, client: httpx.AsyncClient) -> bool:
        """True when every process answers 200 on its model's ready endpoint."""
        path = READY_PATH.format(name=self.model)
        try:
            for p in self.processes:
                if (await client.get(p.url + path, timeout=1.0)).status_code != 200:
                    return False
        except httpx.HTTPError:
            return False
        return True

    def exited(self) -> list[ServerProcess]:
        return [p for p in self.processes if p.exit_code() is not None]

    def running(self) -> list[ServerProcess]:
        return [p for p in self.processes if p.proc is not None and p.exit_code() is None]

    def restart_exited(self) -> list[ServerProcess]:
        """Start again the processes that exited, on the same ports; returns them."""
        dead = self.exited()
        for p in dead:
            p.start()
        self.restarts += bool(dead)
        return dead

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """SIGTERM every process group, then SIGKILL what still runs after ``grace`` seconds."""
        self.healthy, self.reason = False, "stopped"
        for p in self.processes:
            p.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.running():
            await asyncio.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        """SIGKILL whatever still runs and reap it (safe to call at any time)."""
        for p in self.processes:
            p.signal_group(signal.SIGKILL)
            if p.proc is not None:
                try:
                    p.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "url": self.url,
            "healthy": self.healthy,
            "reason": self.reason,
            "restarts": self.restarts,
            "requests": self.requests,
            "failures": self.failures,
            "processes": {p.kind: {"pid": p.pid, "port": p.port, "log": str(p.log_path)} for p in self.processes},
        }


def stop_all_sync(revisions: list[Revision], grace: float = GRACE_SECONDS) -> None:
    """Blocking stop for ``finally`` blocks: SIGTERM every group, wait up to ``grace``, SIGKILL the rest."""
    processes.stop_groups([p.proc for rev in revisions for p in rev.processes if p.proc is not None], grace)

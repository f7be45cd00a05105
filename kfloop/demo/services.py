"""What the demo starts and watches: ``kfloop serve`` as a child process, and the event log.

``ServeProcess`` runs ``python -m kfloop.cli.main serve`` (gateway, predictor and drift transformer per
revision, trigger service) in its own session with its output in a log file, waits until the
gateway and the trigger answer, and stops it with SIGTERM (``kfloop serve`` then stops its own
children), SIGKILL to the whole session after a grace period. ``EventWatcher`` reads the events
of one model as they are recorded in the event log, each once. ``Background`` runs a piece of
work (a canary analysis, a pipeline run) in a thread while the demo keeps following the loop, and
``stop_children`` ends the processes such work left behind when the demo stops early.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from kfloop import processes
from kfloop.config import Settings
from kfloop.errors import KfloopError
from kfloop.names import HEALTH_PATH, TRIGGER_FEEDBACK_PATH, events_prefix
from kfloop.store.objects import ObjectStore, get_json

TRIGGER_LINE = re.compile(r"^trigger on (http://[\w.:\[\]-]+):", re.MULTILINE)


class ServeProcess:
    """``kfloop serve --model MODEL --port PORT ARGS...`` with its log at ``log_path``; the trigger's URL
    is read from the banner ``kfloop serve`` prints once everything is ready."""

    def __init__(self, settings: Settings, model: str, port: int, log_path: Path, serve_args: list[str]):
        self.port, self.log_path = port, Path(log_path)
        self.url, self.trigger_url = f"http://127.0.0.1:{port}", ""
        self.cmd = [
            sys.executable,
            "-m",
            "kfloop.cli",
            "serve",
            "--model",
            model,
            "--port",
            str(port),
            *serve_args,
        ]
        self.env = {**os.environ, **settings.storage_env(), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen | None = None
        self.log_start = 0  # where this run's output starts in the log (earlier runs' output stays)

    @property
    def feedback_url(self) -> str:
        return self.trigger_url + TRIGGER_FEEDBACK_PATH

    def start(self) -> None:
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = processes.spawn(self.cmd, self.log_path, self.env)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the gateway is ready and the trigger healthy; KfloopError naming the log otherwise."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                self.check_running()
                self.trigger_url = self.trigger_url or self._banner_trigger_url()
                if (
                    self.trigger_url
                    and _ok(client, self.url + "/v2/health/ready")
                    and _ok(client, self.trigger_url + HEALTH_PATH)
                ):
                    return
                time.sleep(0.2)
        raise KfloopError(f"kfloop serve was not ready after {timeout:.0f}s; see {self.log_path}")

    def _banner_trigger_url(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_start)
                found = TRIGGER_LINE.search(log.read().decode(errors="replace"))
        except OSError:
            return ""
        return found.group(1) if found else ""

    def port_taken(self) -> bool:
        """Whether ``kfloop serve`` exited because its gateway port was taken."""
        return self.proc is not None and self.proc.poll() is not None and "cannot listen on" in self.log_tail()

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise KfloopError(
                f"kfloop serve exited with code {self.proc.returncode}; last lines of "
                f"{self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM ``kfloop serve``; after ``grace`` seconds SIGKILL its session. Returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                processes.signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # anything left in its session (its children have sessions of their own)
        processes.signal_group(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


def _ok(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


class EventWatcher:
    """The events of ``model`` in the event log, each returned once by ``poll`` (oldest first)."""

    def __init__(self, store: ObjectStore, model: str):
        self.store, self.prefix = store, events_prefix(model)
        self.seen: set[str] = set()
        self.events: list[dict] = []

    def poll(self) -> list[dict]:
        new = []
        for key in self.store.list(self.prefix):
            if key.endswith(".json") and key not in self.seen:
                self.seen.add(key)
                new.append(get_json(self.store, key))
        new.sort(key=lambda e: e.get("time", ""))
        self.events += new
        return new


class Background:
    """``work()`` running in a daemon thread; ``result`` returns its value or raises its error."""

    def __init__(self, what: str, work):
        self.what = what
        self._result = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"demo-{what}", daemon=True)
        self._thread.start()

    def _run(self, work) -> None:
        try:
            self._result = work()
        except BaseException as e:  # noqa: BLE001 - handed to the demo's thread by result()
            self._error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self):
        if self._error is not None:
            raise KfloopError(f"{self.what} failed: {self._error}") from self._error
        return self._result

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def stop_children(grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, this process's child processes (Linux ``/proc``); returns their pids.
    ``kfloop serve`` is not among them once stopped; what is left are a pipeline run's step processes."""
    pids = processes.child_pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(processes.pid_alive(p) for p in pids):
            time.sleep(0.05)
    return pids

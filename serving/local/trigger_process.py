"""The retraining trigger service (``kfloop.serving.trigger.service``) as a child process of ``kfloop serve``.

``kfloop serve`` closes the loop on one machine with it: every drift transformer sends its
``io.kfloop.drift.detected`` events to the trigger (``--sink_url``), labels are posted to the
trigger's ``/v1/feedback``, and the trigger's own events go to the gateway's event sink
(``kfloop.serving.local.events_sink``). Like a revision's servers, the trigger runs in its own session,
logs to a file and is asked to die with its parent. Stopping it also stops the local retraining
runs it started during this session (they run in sessions of their own and would otherwise
outlive ``kfloop serve``); a later trigger reports such a run as failed.

``supervise`` watches it as the controller watches the model servers: a trigger that exits is
reported (``on_event``, a line of ``kfloop serve``'s output, and the log) and started again on the
same port, after a backoff that doubles per restart (1 s, 2 s, ... at most 30 s), so the
transformers' event sink and the feedback URL stay the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kfloop import processes
from kfloop.errors import KfloopError
from kfloop.names import HEALTH_PATH, TRIGGER_FEEDBACK_PATH
from kfloop.processes import GRACE_SECONDS, free_port
from kfloop.retraining.runners import RUN_FILE
from kfloop.serving.local.controller import MAX_RESTART_BACKOFF, PORT_TAKEN
from kfloop.serving.local.revisions import ServerProcess

log = logging.getLogger(__name__)


class TriggerProcess(ServerProcess):
    """``python -m kfloop.serving.trigger.service --port PORT --sink_url SINK ARGS...`` on 127.0.0.1."""

    def __init__(
        self,
        port: int,
        sink_url: str | None,
        log_path: Path,
        env: dict[str, str],
        home: Path,
        args: tuple[str, ...] = (),
    ):
        super().__init__("trigger", [], port, log_path, env)
        self.sink_url, self.args = sink_url, tuple(args)
        self.runs_root = Path(home).resolve() / "trigger" / "runs"
        self.started_at: float | None = None
        self.restarts, self.next_restart = 0, 0.0
        self._watcher: asyncio.Task | None = None
        self.use_port(port)

    def use_port(self, port: int) -> None:
        sink = ["--sink_url", self.sink_url] if self.sink_url else []
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.cmd = [
            sys.executable,
            "-m",
            "kfloop.serving.trigger.service",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--target",
            "local",
            *sink,
            *self.args,
        ]  # later flags (args) win

    @property
    def feedback_url(self) -> str:
        return self.url + TRIGGER_FEEDBACK_PATH

    def start(self) -> None:
        self.started_at = self.started_at or time.time()
        super().start()

    async def start_ready(self, client: httpx.AsyncClient, timeout: float, any_port: bool = False) -> None:
        """Start the trigger and wait until it is healthy. With ``any_port``, when another process
        took the port before the trigger could bind it, start it once more on another free port."""
        self.start()
        try:
            await self.wait_ready(client, timeout)
        except KfloopError as e:
            if not any_port or PORT_TAKEN not in str(e):
                raise
            log.warning("port %d was taken before the trigger could bind it; starting it on another port", self.port)
            self.use_port(free_port())
            self.start()
            await self.wait_ready(client, timeout)

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Wait until ``/healthz`` answers 200; raise with the log's tail if the process exits or the time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise KfloopError(
                    f"the trigger service exited with code {self.exit_code()} before it was ready "
                    f"(serve without it: --no-trigger); last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            try:
                if (await client.get(self.url + HEALTH_PATH, timeout=1.0)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise KfloopError(f"the trigger service was not ready after {timeout:.0f}s; see {self.log_path}")

    def supervise(self, on_event: Callable[[str], None] | None = None, interval: float = 1.0) -> asyncio.Task:
        """Watch the trigger from the running event loop: restart it when it exits (with backoff), and
        report each exit and restart to ``on_event`` and the log. ``stop`` ends the watch."""
        self._watcher = asyncio.get_running_loop().create_task(self._watch(on_event, interval))
        return self._watcher

    async def _watch(self, on_event: Callable[[str], None] | None, interval: float) -> None:
        reported = False
        while True:
            await asyncio.sleep(interval)
            code = self.exit_code()
            if code is None:
                reported = False
                continue
            if not reported:
                message = f"the trigger service exited with code {code}; see {self.log_path}"
                log.warning("%s", message)
                if on_event:
                    on_event(message)
                reported = True
            if time.monotonic() < self.next_restart:
                continue
            self.restarts += 1
            self.next_restart = time.monotonic() + min(MAX_RESTART_BACKOFF, 2.0 ** (self.restarts - 1))
            try:
                self.start()
            except OSError as e:
                log.error("could not restart the trigger service: %s", e)
                continue
            message = f"restarted the trigger service on {self.url} (restart {self.restarts})"
            log.warning("%s", message)
            if on_event:
                on_event(message)
            reported = False

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """End the watch, SIGTERM the trigger, SIGKILL it after ``grace``; then the same for the runs it started."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        processes.stop_groups([self.proc] if self.proc is not None else [], grace)
        runs = self.running_runs()
        if runs:
            processes.stop_groups(runs, grace)

    def running_runs(self) -> list[int]:
        """The process groups of the local retraining runs started since this trigger started whose
        worker still runs (a worker runs in its own session: its pid is its group's id)."""
        if self.started_at is None or not self.runs_root.is_dir():
            return []
        found = []
        for path in self.runs_root.glob(f"*/{RUN_FILE}"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            started = record.get("started", 0) >= self.started_at - 1
            if started and processes.pid_alive(record["pid"], record.get("start_ticks")):
                found.append(record["pid"])
        return found

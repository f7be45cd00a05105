"""``kfloop serve`` supervises its trigger as it does the model servers: a real trigger process killed
with SIGKILL is reported and started again on the same port, with a backoff between restarts."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from kfloop.names import HEALTH_PATH
from kfloop.processes import free_port
from kfloop.serving.local.trigger_process import TriggerProcess
from tests.serving.local.conftest import clean_env

pytestmark = pytest.mark.processes


def test_a_killed_trigger_is_reported_and_restarted_on_its_port(tmp_path):
    home = tmp_path / "home"
    env = {**clean_env(), "KFLOOP_HOME": str(home)}
    trigger = TriggerProcess(free_port(), None, tmp_path / "trigger.log", env, home)
    lines: list[str] = []

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            await trigger.start_ready(client, 60)
            trigger.supervise(lines.append, interval=0.1)
            for _ in range(2):
                first_pid = trigger.pid
                os.kill(first_pid, signal.SIGKILL)
                for _ in range(300):  # up to 30 s: the second restart waits its backoff (1 s)
                    await asyncio.sleep(0.1)
                    if trigger.pid != first_pid and trigger.exit_code() is None:
                        break
                await trigger.wait_ready(client, 60)
                assert (await client.get(trigger.url + HEALTH_PATH)).status_code == 200

    try:
        asyncio.run(scenario())
    finally:
        trigger.stop()
    assert trigger.restarts == 2
    assert lines[0].startswith("the trigger service exited with code -9; see ")
    assert lines[1] == f"restarted the trigger service on {trigger.url} (restart 1)"
    assert lines[3] == f"restarted the trigger service on {trigger.url} (restart 2)"
    assert trigger.exit_code() is not None  # stop ended it, and the watch

"""Child processes, managed one way: each in its own session (process group), asked to die with its
parent, stopped with SIGTERM to the group and SIGKILL after a grace period.

Used by ``kfloop serve`` (model servers and the trigger service), the trigger's local retraining
runs and ``kfloop demo``. Process liveness is read from Linux ``/proc`` where there is one, so a
reused pid is told apart by the process's start time.

A leaf: imports nothing from kfloop.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM when the parent thread exits (Linux)."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the callers' finally blocks still stop it
        pass


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """``cmd`` in a new session, its output appended to ``log_path``, dying with its parent. Call it
    from a long-lived thread: the child is signalled when the thread that started it exits."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def signal_group(pgid: int, sig: int) -> None:
    """``sig`` to every process of the group ``pgid``; a group that is gone is not an error."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """True while any process of the group is left (signal 0 probes without sending)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]) if fields[0] != "Z" else None


def pid_alive(pid: int, ticks: int | None = None) -> bool:
    """True while ``pid`` is a live (not zombie) process, the one started at ``ticks`` when given."""
    if Path("/proc").is_dir():
        now = start_ticks(pid)
        return now is not None and (ticks is None or now == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(groups: Iterable[subprocess.Popen | int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to each process group, up to ``grace`` seconds for all to exit, then SIGKILL to what is
    left. A group is named by the ``Popen`` of its leader (which is then also reaped) or by its id."""
    groups = list(groups)
    for group in groups:
        signal_group(_pgid(group), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(g) for g in groups):
        time.sleep(0.05)
    for group in groups:
        signal_group(_pgid(group), signal.SIGKILL)
        if isinstance(group, subprocess.Popen):
            try:
                group.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a stuck process is reported by whoever checks
                pass


def _pgid(group: subprocess.Popen | int) -> int:
    return group.pid if isinstance(group, subprocess.Popen) else group


def _running(group: subprocess.Popen | int) -> bool:
    # A leader that exited but was not reaped still holds its group: poll() reaps it.
    return group.poll() is None if isinstance(group, subprocess.Popen) else group_alive(group)


def child_pids() -> list[int]:
    """This process's live child processes (Linux ``/proc``; empty elsewhere)."""
    me, pids = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids

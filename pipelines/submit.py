"""Submit the compiled pipeline to a Kubeflow Pipelines API (what ``kfp run submit`` does),
and optionally wait for it, failing when the run fails (``kfp run create --watch`` exits 0
on a failed run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from kfloop.errors import KfloopError, StorageError

TERMINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED")


def submit_run(host: str, yaml_path: str | Path, arguments: dict, experiment: str = "kfloop",
               run_name: str | None = None, namespace: str | None = None, wait: bool = False,
               timeout: int = 3600, poll_seconds: float = 5.0,
               progress: Callable[[str], None] = print) -> dict:
    """Create a run from the pipeline package; with ``wait``, poll until it ends."""
    import kfp

    run_name = run_name or f"kfloop-{arguments.get('model_name', 'churn')}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        client = kfp.Client(host=host, namespace=namespace)
        result = client.create_run_from_pipeline_package(str(yaml_path), arguments=arguments, run_name=run_name,
                                                         experiment_name=experiment, namespace=namespace)
    except Exception as e:  # noqa: BLE001 - kfp raises urllib3/ApiException types; report them plainly
        raise StorageError(f"Kubeflow Pipelines API at {host} refused or did not answer: {_short(e)}") from e
    run_id = result.run_id
    progress(f"submitted run {run_id} ({run_name}) to {host}, experiment {experiment}")
    state = "SUBMITTED"
    if wait:
        state = _wait(client, run_id, timeout, poll_seconds, progress)
    return {"run_id": run_id, "run_name": run_name, "state": state, "host": host}


def _wait(client, run_id: str, timeout: int, poll_seconds: float, progress: Callable[[str], None]) -> str:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = str(client.get_run(run_id).state or "PENDING").upper()
        if state != last:
            progress(f"run {run_id}: {state}")
            last = state
        if state in TERMINAL_STATES:
            return state
        time.sleep(poll_seconds)
    raise KfloopError(f"run {run_id} did not finish within {timeout}s (last state {last})")


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0] if text else ''}"[:300]

"""Submit the compiled pipeline to a Kubeflow Pipelines API (what ``kfp run submit`` does),
and optionally wait for it, failing when the run fails (``kfp run create --watch`` exits 0
on a failed run)."""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from kfloop.errors import KfloopError, StorageError

TERMINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED")


def submit_run(
    host: str,
    yaml_path: str | Path,
    arguments: dict,
    experiment: str = "kfloop",
    run_name: str | None = None,
    namespace: str | None = None,
    wait: bool = False,
    timeout: int = 3600,
    poll_seconds: float = 5.0,
    progress: Callable[[str], None] = print,
) -> dict:
    """Create a run from the pipeline package; with ``wait``, poll until it ends."""
    run_name = run_name or f"kfloop-{arguments.get('model_name', 'churn')}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        with _quiet_kfp(progress):
            client = _connect(host, namespace)
            result = client.create_run_from_pipeline_package(
                str(yaml_path), arguments=arguments, run_name=run_name, experiment_name=experiment, namespace=namespace
            )
    except Exception as e:  # noqa: BLE001 - kfp raises urllib3/ApiException types; report them plainly
        raise StorageError(f"Kubeflow Pipelines API at {host} refused or did not answer: {_short(e)}") from e
    run_id = result.run_id
    progress(f"submitted run {run_id} ({run_name}) to {host}, experiment {experiment}")
    state = "SUBMITTED"
    if wait:
        state = _wait(client, run_id, timeout, poll_seconds, progress)
    return {"run_id": run_id, "run_name": run_name, "state": state, "host": host}


def _connect(host: str, namespace: str | None):
    """A ``kfp.Client`` whose start-up health check tries once (kfp's own tries 5 times, 5 s apart,
    logging a traceback each time), so a wrong or broken host fails in a second, not 25."""
    import kfp

    class _Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration: int = 5):
            return self._healthz_api.healthz_service_get_healthz()

    return _Client(host=host, namespace=namespace)


@contextlib.contextmanager
def _quiet_kfp(progress: Callable[[str], None]):
    """Keep kfp.Client's prints ("Run details: URL") off stdout, where ``--json`` output goes,
    passing them to ``progress``; drop its FutureWarning about server versions."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for line in printed.getvalue().splitlines():
            if line.strip():
                progress(line.strip())


def _wait(client, run_id: str, timeout: int, poll_seconds: float, progress: Callable[[str], None]) -> str:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            state = str(client.get_run(run_id).state or "PENDING").upper()
        except Exception as e:  # noqa: BLE001 - as in submit_run
            raise StorageError(f"could not read the state of run {run_id}: {_short(e)}") from e
        if state != last:
            progress(f"run {run_id}: {state}")
            last = state
        if state in TERMINAL_STATES:
            return state
        time.sleep(poll_seconds)
    raise KfloopError(f"run {run_id} did not finish within {timeout}s (last state {last})")


def _short(error: Exception) -> str:
    if getattr(error, "status", None):  # kfp_server_api.ApiException: an HTTP error answer
        return f"HTTP {error.status} {getattr(error, 'reason', '') or ''}".strip()
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0] if text else ''}"[:300]

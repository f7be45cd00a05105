"""Where retraining runs: a worker process on this machine (kfp.local) or a Kubeflow Pipelines API.

Both runners share one small interface: ``launch(name, model, arguments) -> run_id`` starts the training
pipeline once per ``name`` (launching a name again finds the run already there instead of
starting a second one, so a trigger restarted between launching and recording does not start
the run twice) and ``poll(run_id) -> RunStatus`` says whether it is running, succeeded (with the
registered ``NAME:VERSION``, or why none was registered) or failed (with the reason).

``LocalRunner`` starts ``kfloop pipeline run --json`` (or a configured command taking the same
``--param key=value`` flags) in its own session, with its output in
``<KFLOOP_HOME>/trigger/runs/<run_id>/``; the run outlives the trigger, and a restarted trigger
finds it again by its pid (checked against the process start time) and reads its result from
the files. ``KfpRunner`` creates a run from the compiled pipeline package through ``kfp.Client``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from kfloop import processes
from kfloop.config import Settings
from kfloop.names import key_segment

log = logging.getLogger(__name__)

DEFAULT_LOCAL_COMMAND = (sys.executable, "-m", "kfloop.cli", "pipeline", "run", "--json")
RUN_FILE, OUTPUT_FILE, LOG_FILE, EXIT_FILE = "run.json", "output.json", "log.txt", "exit_code"
KFP_ACTIVE = ("PENDING", "RUNNING", "PAUSED", "CANCELING", "RUNTIME_STATE_UNSPECIFIED")
KFP_FAILED = ("FAILED", "CANCELED", "CANCELLED", "SKIPPED")


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """A run's state: ``running``, ``succeeded`` or ``failed``. ``registered`` is ``NAME:VERSION``
    or None; ``reason`` says why nothing was registered or why the run failed. ``registered_known``
    is False when the backend cannot tell what a successful run registered (the caller asks the
    registry)."""

    state: str
    registered: str | None = None
    reason: str = ""
    registered_known: bool = True


def run_params(arguments: dict) -> list[str]:
    """Pipeline arguments as ``--param key=value`` flags (booleans as true/false, objects and lists as JSON)."""
    flags = []
    for key, value in arguments.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value)
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += ["--param", f"{key}={text}"]
    return flags


class LocalRunner:
    """Training runs as worker processes on this machine."""

    target = "local"

    def __init__(self, settings: Settings, command: list[str] | tuple[str, ...] = DEFAULT_LOCAL_COMMAND):
        self.settings, self.command = settings, list(command)
        self.root = Path(settings.home).resolve() / "trigger" / "runs"
        self._procs: dict[str, subprocess.Popen] = {}

    def launch(self, name: str, model: str, arguments: dict) -> str:
        run_id = key_segment(name)
        folder = self.root / run_id
        if (folder / RUN_FILE).is_file():
            log.info("run %s was started before; not starting it again", run_id)
            return run_id
        folder.mkdir(parents=True, exist_ok=True)
        cmd = self.command + run_params(arguments)
        env = {**os.environ, **self.settings.storage_env()}
        with open(folder / OUTPUT_FILE, "wb") as out, open(folder / LOG_FILE, "wb") as err:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=folder, start_new_session=True
            )
        self._procs[run_id] = proc
        record = {
            "run_id": run_id,
            "pid": proc.pid,
            "start_ticks": processes.start_ticks(proc.pid),
            "command": cmd,
            "arguments": arguments,
            "started": time.time(),
        }
        _write_atomic(folder / RUN_FILE, json.dumps(record, indent=1, default=str))
        log.info("started run %s (pid %d): %s", run_id, proc.pid, " ".join(cmd))
        return run_id

    def poll(self, run_id: str) -> RunStatus:
        folder = self.root / key_segment(run_id)
        try:
            record = json.loads((folder / RUN_FILE).read_text())
        except (FileNotFoundError, ValueError) as e:
            return RunStatus("failed", reason=f"run {run_id} has no readable record in {folder}: {e}")
        exit_code = self._exit_code(run_id, folder, record)
        if exit_code == "running":
            return RunStatus("running")
        return _local_result(folder, exit_code, record["pid"])

    def _exit_code(self, run_id: str, folder: Path, record: dict) -> int | None | str:
        """The worker's exit code, None when it is gone and its code unknown, or "running"."""
        proc = self._procs.get(run_id)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return "running"
            _write_atomic(folder / EXIT_FILE, str(code))
            self._procs.pop(run_id)
            return code
        if (folder / EXIT_FILE).is_file():
            return int((folder / EXIT_FILE).read_text())
        return "running" if processes.pid_alive(record["pid"], record.get("start_ticks")) else None

    def stop(self) -> None:
        """Forget the worker processes (they keep running; a restarted trigger finds them again)."""
        self._procs.clear()


def _local_result(folder: Path, exit_code: int | None, pid: int) -> RunStatus:
    """A finished worker's result from its ``--json`` output, or why it failed from its log."""
    try:
        doc = json.loads((folder / OUTPUT_FILE).read_text())
    except (FileNotFoundError, ValueError):
        doc = None
    if isinstance(doc, dict) and exit_code in (0, None):
        if doc.get("registered"):
            return RunStatus("succeeded", doc["registered"])
        gate = doc.get("gate") or {}
        return RunStatus("succeeded", None, f"the quality gate did not pass: {gate.get('reason', 'no reason given')}")
    error = _last_error(folder / LOG_FILE)
    if error:
        return RunStatus("failed", reason=error)
    if exit_code is None:
        return RunStatus("failed", reason=f"worker process {pid} is gone and left no result in {folder}")
    return RunStatus(
        "failed",
        reason=f"worker process {pid} exited with status {exit_code} without a result (log: {folder / LOG_FILE})",
    )


def _last_error(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :].strip()
    return None

    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


class KfpRunner:
    """Training runs on a Kubeflow Pipelines API (``KFLOOP_KFP_HOST``), one per run name."""

    target = "kfp"

    def __init__(
        self,
        host: str,
        namespace: str | None = None,
        experiment: str = "kfloop",
        *,
        yaml_path: str | Path,
        token_path: str | None = None,
    ):
        self.host, self.yaml_path, self.namespace, self.experiment = host, str(yaml_path), namespace, experiment
        self.token_path = token_path
        self._client = None

    def client(self):
        """A ``kfp.Client`` whose health check tries once (kfp's own waits 25 s on a bad host). With
        ``token_path`` (``KF_PIPELINES_SA_TOKEN_PATH``, a projected ServiceAccount token) it sends
        that token, re-read on every call; kfp itself ignores the token when given a host."""
        if self._client is None:
            import kfp
            from kfp.client import ServiceAccountTokenVolumeCredentials

            class _Client(kfp.Client):
                def get_kfp_healthz(self, sleep_duration: int = 5):
                    return self._healthz_api.healthz_service_get_healthz()

            credentials = None
            if self.token_path and os.path.isfile(self.token_path):
                credentials = ServiceAccountTokenVolumeCredentials(self.token_path)
            self._client = _Client(host=self.host, namespace=self.namespace, credentials=credentials)
        return self._client

    def launch(self, name: str, model: str, arguments: dict) -> str:
        existing = self._existing_run(name, model)
        if existing is not None:
            return existing
        try:
            result = self.client().create_run_from_pipeline_package(
                self.yaml_path,
                arguments=arguments,
                run_name=name,
                experiment_name=self.experiment,
                namespace=self.namespace,
            )
        except Exception:
            self._client = None  # reconnect on the next attempt
            raise
        log.info("created run %s (%s) on %s", result.run_id, name, self.host)
        return result.run_id

    def _existing_run(self, name: str, model: str) -> str | None:
        """The run called ``name`` when it exists already, else a run of ``model`` still in flight."""
        query = {
            "predicates": [{"key": "display_name", "operation": "IS_SUBSTRING", "string_value": f"kfloop-{model}-"}]
        }
        runs = (
            self.client()
            .list_runs(page_size=100, sort_by="created_at desc", namespace=self.namespace, filter=json.dumps(query))
            .runs
            or []
        )
        for run in runs:
            if run.display_name == name:
                log.info("run %s exists already as %s; not starting it again", name, run.run_id)
                return run.run_id
        for run in runs:
            params = (run.runtime_config.parameters or {}) if run.runtime_config else {}
            if params.get("model_name") == model and str(run.state).upper() in KFP_ACTIVE:
                log.info(
                    "run %s (%s) of %s is in flight; following it instead of starting %s",
                    run.display_name,
                    run.run_id,
                    model,
                    name,
                )
                return run.run_id
        return None

    def stop(self) -> None:
        self._client = None

    def poll(self, run_id: str) -> RunStatus:
        run = self.client().get_run(run_id)
        state = str(run.state or "PENDING").upper()
        if state == "SUCCEEDED":
            return RunStatus("succeeded", registered_known=False)
        if state in KFP_FAILED:
            error = getattr(run.error, "message", None) if run.error else None
            return RunStatus(
                "failed", reason=f"Kubeflow Pipelines run {run_id} ended {state}" + (f": {error}" if error else "")
            )
        return RunStatus("running")

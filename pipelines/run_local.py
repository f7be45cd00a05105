"""Run the compiled pipeline on this machine with ``kfp.local.SubprocessRunner``.

Every step runs in its own Python process, as on a cluster (without the container). KFP's
verbose output goes to ``<run folder>/kfp.log``; the caller sees one progress line per step, and the
lines a step prints after ``kfloop.names.PROGRESS_MARKER`` (the batch step's chunks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from kfloop.config import Settings
from kfloop.errors import KfloopError
from kfloop.names import PROGRESS_MARKER
from kfloop.pipelines.training import YAML_PATH

ANSI = re.compile(r"\x1b\[[0-9;]*m")
KFLOOP_ERROR_LINE = re.compile(r"^\s*kfloop\.errors\.(\w+): (.*)$")
STEP_EVENTS = (
    (re.compile(r"Executing task '?([\w-]+)'?"), "started"),
    (re.compile(r"Task '?([\w-]+)'? finished with status SUCCESS"), "done"),
    (re.compile(r"Task '?([\w-]+)'? finished with status FAILURE"), "FAILED"),
    (re.compile(r"Skipping conditional task '?([\w-]+)'?"), "skipped"),
)


class PipelineRunFailed(KfloopError):
    """A local pipeline run failed; the message is the step's own error when it was a kfloop error."""


@dataclasses.dataclass
class LocalRunResult:
    run_dir: Path
    log_path: Path
    seconds: float
    gate: dict
    registered: str | None  # "NAME:VERSION", or None when the gate failed

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "run_dir": str(self.run_dir), "log_path": str(self.log_path)}


class _ProgressWriter(io.TextIOBase):
    """A stdout stand-in: keeps KFP's output in a log file and reports step progress."""

    def __init__(self, log, progress: Callable[[str], None]):
        self.log, self.progress, self.buffer, self.started = log, progress, "", {}

    def write(self, text: str) -> int:
        self.log.write(text)
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self._scan(ANSI.sub("", line))
        return len(text)

    def _scan(self, line: str) -> None:
        marked = line.find(PROGRESS_MARKER)
        if marked >= 0:
            self.progress(f"    {line[marked + len(PROGRESS_MARKER) :]}")
            return
        for pattern, event in STEP_EVENTS:
            match = pattern.search(line)
            if match:
                step = match.group(1)
                if event == "started":
                    self.started[step] = time.monotonic()
                    self.progress(f"  {step:<28} running")
                else:
                    took = time.monotonic() - self.started.get(step, time.monotonic())
                    self.progress(f"  {step:<28} {event}" + (f" ({took:.1f}s)" if event != "skipped" else ""))


def run_local(
    settings: Settings, arguments: dict, yaml_path: str | Path = YAML_PATH, progress: Callable[[str], None] = print
) -> LocalRunResult:
    """Run the compiled pipeline with ``arguments``; raises PipelineRunFailed on a failed step."""
    from kfp import components, local

    root = Path(settings.home).resolve() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    pipeline = components.load_component_from_file(str(yaml_path))
    # kfp.local's task cache stays off: every run reads its source afresh and writes its outputs into
    # its own run folder (where the gate and the registered version are read from). The compiled
    # caching options apply on a cluster only.
    runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True, enable_caching=False)
    started = time.monotonic()
    with open(root / f".log-{os.getpid()}-{time.time_ns()}", "w") as log:
        writer = _ProgressWriter(log, progress)
        try:
            with _environment(settings.storage_env()), contextlib.redirect_stdout(writer), warnings.catch_warnings():
                # kfp.local warns that resource settings and the custom base image do not apply
                # to a subprocess run: expected here, so kept out of the user's way.
                warnings.simplefilter("ignore")
                pipeline(**arguments)
            failure = None
        except Exception as e:  # noqa: BLE001 - KFP raises RuntimeError; the step's error is in the log
            failure = e
    run_dir = _new_run_dir(root, before)
    log_path = run_dir / "kfp.log" if run_dir else Path(log.name)
    if run_dir:
        os.replace(log.name, log_path)
    if failure is not None:
        raise PipelineRunFailed(_explain_failure(log_path, failure)) from failure
    return LocalRunResult(run_dir, log_path, time.monotonic() - started, _gate(run_dir), _registered(run_dir))


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Point the steps' processes at the same storage; restores the environment afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _new_run_dir(root: Path, before: set[Path]) -> Path | None:
    new = [p for p in set(root.iterdir()) - before if p.is_dir()]
    return max(new, key=lambda p: p.stat().st_mtime) if new else None


def _explain_failure(log_path: Path, error: Exception) -> str:
    """The step's kfloop error message when there is one, else KFP's own."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        match = KFLOOP_ERROR_LINE.match(ANSI.sub("", line))
        if match:
            return match.group(2)
    return f"{error} (full log: {log_path})"


def _gate(run_dir: Path | None) -> dict:
    path = run_dir / "evaluate" / "evaluation" if run_dir else None
    return json.loads(path.read_text())["gate"] if path and path.is_file() else {}


def _registered(run_dir: Path | None) -> str | None:
    """The register step's output ("NAME:VERSION"), from its executor output; None if it did not run."""
    path = run_dir / "register" / "executor_output.json" if run_dir else None
    if not (path and path.is_file()):
        return None
    return json.loads(path.read_text()).get("parameterValues", {}).get("Output")

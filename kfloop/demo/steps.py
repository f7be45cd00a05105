"""The steps of ``kfloop demo`` (``kfloop.demo.run``) and the waiting between them.

``DemoRun`` keeps what the demo started (``kfloop serve``, the traffic threads, the bad candidate's
training) so ``stop`` can end all of it whatever happened. Between steps ``follow`` polls the event
log and the gateway's status (``kfloop.demo.follow.LoopView`` turns them into timeline entries)
until what it waits for happened, and fails naming the log to read when it does not in time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from kfloop.config import Settings
from kfloop.demo.canary import CanaryRunner
from kfloop.demo.follow import LoopView, auc_text
from kfloop.demo.run import DemoFailed, DemoOptions, fresh_model, serve_args
from kfloop.demo.services import Background, ServeProcess, stop_children
from kfloop.demo.timeline import Timeline
from kfloop.demo.traffic import Phase, TrafficReplay
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry, VersionRecord

POLL_SECONDS = 0.25


class DemoRun:
    """One run of the demo: its settings, what it started, and what it has seen so far."""

    def __init__(self, settings: Settings, options: DemoOptions, timeline: Timeline):
        self.settings, self.options, self.timeline = settings, options, timeline
        self.home = Path(settings.home).resolve()
        self.dir = self.home / "demo"
        self.store = open_store(settings)
        self.registry = Registry(self.store)
        self.model = options.model or fresh_model(self.registry, self.home)
        self.view = LoopView(timeline, self.store, self.registry, self.model, options.window)
        self.serve: ServeProcess | None = None
        self.traffic: TrafficReplay | None = None
        self.canary: CanaryRunner | None = None
        self.bad_training: Background | None = None
        self.bad_record: VersionRecord | None = None
        self.report_path: Path | None = None
        self.timeline_path = self.dir / "timeline.json"

    # -- (a) the first version -----------------------------------------------------------------

    def train_first(self) -> None:
        from kfloop.pipelines.run_local import run_local

        o = self.options
        if o.port:  # fail before training when the gateway's port is taken
            from kfloop.serving.local.gateway import bind

            bind(o.port).close()
        self.timeline.add("start", f"kfloop demo: model {self.model} on sample:churn, state in {self.home}")
        arguments = {
            "source": f"sample:churn?n_rows={o.rows}&seed={o.seed}",
            "target": "churn",
            "sensitive_feature": "age",
            "model_name": self.model,
            "seed": o.seed,
        }
        with self.step("training v1 with the pipeline", self.home / "runs"):
            result = run_local(self.settings, arguments, progress=self._pipeline_progress)
        if not result.registered:
            raise DemoFailed(f"v1 did not pass the quality gate ({result.gate.get('reason')}); log {result.log_path}")
        record = self.registry.resolve(result.registered)
        self.registry.set_stage(
            self.model, record.version, "production", reason="kfloop demo: the first version serves all traffic"
        )
        self.timeline.add(
            "v1_registered",
            f"v{record.version} registered ({auc_text(record)}) and made production",
            version=record.version,
            seconds=round(result.seconds, 1),
        )

    def _pipeline_progress(self, line: str) -> None:
        if not line.rstrip().endswith("running"):
            self.timeline.detail(" ".join(line.split()))

    # -- (b) serving, (c) traffic --------------------------------------------------------------

    def start_serving(self) -> None:
        from kfloop.processes import free_port

        o = self.options
        for attempt in (1, 2):  # a free port can be taken before serve binds it: then another one
            port = o.port or free_port()
            self.serve = ServeProcess(self.settings, self.model, port, self.dir / "serve.log", serve_args(o, port))
            self.serve.start()
            try:
                with self.step("starting kfloop serve", self.serve.log_path):
                    self.serve.wait_ready(o.timeout)
                break
            except DemoFailed:
                if o.port or attempt == 2 or not self.serve.port_taken():
                    raise
        token = self.settings.control_token_path  # written by kfloop serve: its control plane wants it
        self.canary = CanaryRunner(self.registry, self.store, self.serve.url, o, self.model, token_file=token)
        self.timeline.add(
            "serving",
            f"serving v{self.production().version} on {self.serve.url} (predictor + drift "
            f"transformer); trigger on {self.serve.trigger_url}",
            url=self.serve.url,
            trigger_url=self.serve.trigger_url,
        )

    def replay(self) -> None:
        o = self.options
        self.traffic = TrafficReplay(
            self.serve.url,
            self.serve.feedback_url,
            self.model,
            seed=o.seed,
            rows_per_request=o.rows_per_request,
            requests_per_second=o.requests_per_second,
            label_delay=o.label_delay,
            id_prefix=f"demo{int(time.time())}",
            token_file=self.settings.control_token_path,
        )
        self.traffic.start()
        self.timeline.add(
            "traffic",
            f"replaying traffic: {o.requests_per_second:g} requests/s of "
            f"{o.rows_per_request} customers; their labels go to the trigger "
            f"{o.label_delay:g}s later",
        )
        rows = o.baseline_windows * o.window
        self.follow(lambda: self.traffic.rows_sent >= rows, 60, f"{rows} rows of baseline traffic", self.serve.log_path)

    # -- (d) drift, (e) retraining and the canary ----------------------------------------------

    def drift_and_retrain(self) -> None:
        o = self.options
        self.view.first_version = str(self.production().version)
        self.traffic.set_phase(Phase("data-drift", age_shift=o.age_shift))
        self.follow(
            lambda: "data-drift" in self.traffic.phase_started, 10, "the first drifted request", self.serve.log_path
        )
        self.view.onset = self.traffic.phase_started["data-drift"]
        self.timeline.add(
            "drift_onset",
            f"injecting data drift: customers {o.age_shift:g} years older (age +{o.age_shift:g})",
            at=self.view.onset[0],
            rows_before=self.view.onset[1],
            window=o.window,
        )
        logs = self.home / "serving" / self.model / "logs"
        self.follow(lambda: self.timeline.first("drift_detected"), 60, "drift detection", logs)
        self.count_drifted_before(self.timeline.first("drift_detected"))
        self.follow(
            lambda: self.view.started_run, 60, "the retraining run's start", self.home / "serving" / "trigger.log"
        )
        run_log = self.home / "trigger" / "runs" / str(self.view.started_run.get("run_id")) / "log.txt"
        self.follow(lambda: self.view.finished_run, o.timeout, "the retraining run", run_log)
        run = self.view.finished_run
        if not run.get("registered"):
            raise DemoFailed(
                f"the retraining run {run.get('run_name')} ({run.get('status')}) registered nothing: "
                f"{run.get('reason')}; log {run_log}"
            )
        self.start_bad_candidate()  # trains while v2's canary analysis runs
        self.analyze(self.registry.resolve(run["registered"]), expect="promoted", by_trigger=True)
        self.concept_drift()

    def count_drifted_before(self, detected) -> None:
        """Add to the detection's entry how much drifted traffic was served before it, in requests,
        rows and drift windows (counting the window the drift started in)."""
        sent = self.traffic.sent_since(self.view.onset[0], until=detected.epoch, phase="data-drift")
        window, onset_rows = self.options.window, self.view.onset[1]
        detected.data.update(
            drifted_requests=len(sent),
            drifted_rows=sum(s.rows for s in sent),
            window_size=window,
            onset_window=onset_rows // window,
        )
        if isinstance(detected.data.get("window"), int):
            detected.data["windows_after_onset"] = detected.data["window"] - onset_rows // window + 1

    def analyze(self, record: VersionRecord, expect: str, by_trigger: bool = False) -> None:
        """Wait for the canary analysis of ``record``: the trigger's (``by_trigger``), else one started
        here; DemoFailed unless its outcome is ``expect``."""
        what = f"the canary analysis of {record.ref}"
        if by_trigger:
            log = self.home / "serving" / "trigger.log"
            self.follow(lambda: self.view.outcome(record.version), self.options.timeout, what, log)
            outcome, reason = self.view.outcome(record.version)
        else:
            runner = self.canary.start(record.ref)
            self.follow(runner.done, self.options.timeout, what, self.serve.log_path)
            result = runner.result()
            outcome, reason = result.get("outcome"), result.get("reason")
        self.view.poll()
        if outcome != expect:
            raise DemoFailed(f"{what} ended {outcome!r}, expected {expect!r}: {reason}")
        if outcome == "promoted":
            at = self.view.decided_at.get(record.version)
            steps = " -> ".join(f"{p}%" for p in (*self.options.canary_steps, 100))
            self.timeline.add("canary_passed", f"canary {steps}: passed", at=at, version=record.version)
            old = [r.version for r in self.registry.list_versions(self.model) if r.stage == "archived"]
            self.timeline.add(
                "promoted",
                f"v{record.version} promoted: production" + (f" (v{old[-1]} archived)" if old else ""),
                at=at,
                version=record.version,
            )

    # -- (f) a bad candidate, (g) the report, (h) stopping -------------------------------------

    def start_bad_candidate(self) -> None:
        """Train a deliberately bad candidate in the background: the same pipeline on inverted labels."""
        from kfloop.demo.canary import write_inverted_labels
        from kfloop.pipelines.run_local import run_local

        o = self.options
        path = write_inverted_labels(self.dir / "inverted-labels.parquet", o.rows, o.seed + 99, o.age_shift)
        arguments = {
            "source": str(path),
            "target": "churn",
            "sensitive_feature": "age",
            "model_name": self.model,
            "seed": o.seed,
        }
        self.bad_training = Background(
            "training the bad candidate", lambda: run_local(self.settings, arguments, progress=lambda line: None)
        )
        self.timeline.add(
            "note", "meanwhile training a deliberately bad candidate: the same pipeline on inverted labels"
        )

    def bad_candidate(self) -> None:
        """Wait for the bad candidate, then let the canary analysis catch it."""
        self.follow(lambda: self.bad_record, self.options.timeout, "the bad candidate's training", self.home / "runs")
        self.analyze(self.bad_record, expect="rolled-back")
        stage = self.registry.get(self.model, self.bad_record.version).stage
        if stage != "rejected":
            raise DemoFailed(f"{self.bad_record.ref} was rolled back but its stage is {stage!r}, not 'rejected'")

    def _check_bad_training(self) -> None:
        """Announce the bad candidate once its training ended (in ``follow``, so the timeline stays in order)."""
        if self.bad_training is None or self.bad_record is not None or not self.bad_training.done():
            return
        result = self.bad_training.result()
        if not result.registered:
            raise DemoFailed(
                f"the bad candidate was not registered ({result.gate.get('reason')}); log {result.log_path}"
            )
        self.bad_record = self.registry.resolve(result.registered)
        self.timeline.add(
            "bad_registered",
            f"the bad candidate v{self.bad_record.version} is registered "
            f"({auc_text(self.bad_record)} on its own inverted test data, so its "
            f"gate passed)",
            version=self.bad_record.version,
        )

    def write_report(self) -> None:
        from kfloop.demo.events import windows_text
        from kfloop.monitoring.window_log import DEFAULT_FLUSH_INTERVAL_S, read_windows
        from kfloop.report.page import write_report

        self.traffic.stop()
        time.sleep(DEFAULT_FLUSH_INTERVAL_S + 0.5)  # the transformer writes its last window summaries
        self.view.poll()
        self.timeline.add("windows", windows_text(read_windows(self.store, self.model)))
        with self.step("writing the report", self.options.report):
            self.report_path = write_report(self.store, self.model, self.options.report).resolve()
        self.timeline.add("report", f"report written to {self.report_path}")

    def keep_serving(self) -> None:
        self.timeline.add("note", f"still serving {self.model} on {self.serve.url}; Ctrl-C stops it")
        while True:
            self.serve.check_running()
            time.sleep(1.0)

    def stop(self) -> None:
        """Stop the traffic and ``kfloop serve`` (which stops its servers, trigger and runs); save the timeline."""
        if self.traffic is not None:
            self.traffic.stop()
        if self.canary is not None:
            self.canary.stop()
        if self.bad_training is not None and not self.bad_training.done():
            stop_children()  # the pipeline's step processes
        if self.serve is not None and self.serve.proc is not None:
            code = self.serve.stop()
            self.timeline.add("stopped", f"stopped kfloop serve (exit code {code}); state kept in {self.home}")
        self.timeline.save(self.timeline_path)

    # -- following the loop --------------------------------------------------------------------

    def follow(self, done: Callable[[], object], timeout: float, what: str, log: Path) -> None:
        """Poll until ``done()``; DemoFailed naming ``what`` and ``log`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise DemoFailed(f"waiting for {what}: nothing after {timeout:.0f}s; see {log}")
            if self.serve is not None:
                self.serve.check_running()
            self.view.poll()
            if self.canary is not None:
                self.view.gateway(self.canary.status())
            self._check_bad_training()
            time.sleep(POLL_SECONDS)

    def concept_drift(self) -> None:
        """From now on churn follows another relationship: the served models' quality falls."""
        self.traffic.set_phase(Phase("concept-drift", age_shift=self.options.age_shift, concept_drift=1.0))
        self.timeline.add(
            "concept_drift",
            "injecting concept drift: churn now rises with tenure and age (the old relationship reversed)",
        )

    @contextlib.contextmanager
    def step(self, what: str, log: Path):
        try:
            yield
        except DemoFailed:
            raise
        except Exception as e:
            raise DemoFailed(f"{what} failed: {e} (log: {log})") from e

    def production(self) -> VersionRecord:
        return self.registry.production(self.model)

"""``kfloop demo``: the whole loop on one machine, on the built-in churn data, with a timeline.

``run_demo`` (a) trains and registers v1 through the training pipeline (``run_local``) and makes it
production, (b) serves it with ``kfloop serve`` (predictor, drift transformer, trigger service,
gateway on 127.0.0.1), (c) replays customers from ``kfloop.training.samples.churn`` with their labels
posted to the trigger a little later, (d) injects data drift (older customers) and then concept
drift, (e) follows the loop through the event log: drift detected, retraining run (strategy
combined), v2 registered, canary analysis 10% -> 50% -> 100%, v2 promoted, (f) registers a
deliberately bad candidate (trained on inverted labels) whose canary analysis rolls it back,
(g) writes the HTML report and (h) stops everything it started, also on Ctrl-C or an error.
Its state stays in ``KFLOOP_HOME`` (registry, captures, event log, ``demo/timeline.json``,
``demo/serve.log``). Steps and waits live in ``kfloop.demo.steps``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from kfloop.config import Settings
from kfloop.demo.timeline import Timeline
from kfloop.errors import KfloopError
from kfloop.names import CAPTURES_PREFIX, EVENTS_PREFIX, FEEDBACK_PREFIX, TRIGGER_PREFIX
from kfloop.store.registry import Registry

MODEL = "churn"


class DemoFailed(KfloopError):
    """A demo step failed; the message names the step and where its log is."""


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """Sizes and pace of the demo. ``fast()`` is the CI size."""

    port: int | None = None
    rows: int = 5000  # training rows of v1
    seed: int = 0
    report: Path = Path("kfloop-report.html")
    keep_serving: bool = False
    model: str | None = None  # default: churn, or churn-2, ... when churn is taken in this KFLOOP_HOME
    window: int = 200  # rows per drift window
    baseline_windows: int = 4  # windows of undrifted traffic before the data drift
    age_shift: float = 15.0
    requests_per_second: float = 20.0
    rows_per_request: int = 10
    label_delay: float = 2.0
    canary_steps: tuple = (10, 50)
    canary_hold_requests: int = 25
    min_predictions: int = 200  # captured rows per side before divergence is judged
    max_divergence: float = 0.4  # two good models on different samples differ by up to ~0.25
    timeout: float = 180.0  # longest wait for any one step

    @classmethod
    def fast(cls, **changes) -> DemoOptions:
        """Smaller: 2000 training rows, windows of 100 rows, a shorter canary."""
        return dataclasses.replace(cls(rows=2000, window=100, canary_hold_requests=15, min_predictions=150), **changes)


def serve_args(options: DemoOptions, port: int) -> list[str]:
    """The flags of the demo's ``kfloop serve`` on ``port``: drift windows of ``options.window`` rows, captures
    written twice a second (labels follow them closely), and a trigger that retrains after two
    drifted windows on combined data (``original_source``; a 5% gate tolerance, as candidate and
    production are compared on a few hundred test rows) and rolls out what its runs register
    through the demo's canary analysis (``kfloop.demo.canary.trigger_flags``)."""
    from kfloop.demo.canary import trigger_flags

    o = options
    transformer = f"--drift_window {o.window} --capture_flush_seconds 0.5"
    trigger = (
        f"--consecutive_windows 2 --cooldown_seconds 3600 --strategy combined --poll_seconds 1 "
        f"--retry_seconds 0.5 --quality_window {o.window} --original_source {original_source(o)} "
        f"{trigger_flags(o, f'http://127.0.0.1:{port}')} "
        f"--pipeline_params tolerance=0.05 sensitive_feature=age seed={o.seed}"
    )
    return ["--seed", str(o.seed), "--transformer-args", transformer, "--trigger-args", trigger]


def original_source(options: DemoOptions) -> str:
    """The retraining runs' original data: more customers from v1's source (another seed of the
    generator). v1's own rows would leak into the retraining's test split, where v1, evaluated on
    rows it was trained on, would look better than any candidate and fail its gate."""
    return f"sample:churn?n_rows={options.rows}&seed={options.seed + 1}"


def fresh_model(registry: Registry, home: Path) -> str:
    """``churn``, or the first ``churn-N`` with nothing registered, served or recorded in this store."""
    taken, store = set(registry.models()), registry.store
    for n in range(1, 1000):
        name = MODEL if n == 1 else f"{MODEL}-{n}"
        if name in taken or (home / "serving" / name).exists():
            continue
        if not any(
            store.list(f"{prefix}/{name}/")
            for prefix in (EVENTS_PREFIX, TRIGGER_PREFIX, CAPTURES_PREFIX, FEEDBACK_PREFIX)
        ):
            return name
    raise DemoFailed(f"no free model name {MODEL}-N in {store.uri('')}; use --model")


@dataclasses.dataclass
class DemoResult:
    model: str
    timeline: Timeline
    report: Path | None
    timeline_path: Path


def run_demo(
    settings: Settings, options: DemoOptions = DemoOptions(), out: Callable[[str], None] | None = None
) -> DemoResult:
    """Run the demo; raises DemoFailed (after stopping everything) when a step fails."""
    from kfloop.demo.steps import DemoRun

    stream = sys.stdout  # the pipeline runner redirects sys.stdout while a run goes; the timeline does not follow
    timeline = Timeline(out or (lambda line: print(line, file=stream, flush=True)))
    run = DemoRun(settings, options, timeline)
    try:
        run.train_first()
        run.start_serving()
        run.replay()
        run.drift_and_retrain()
        run.bad_candidate()
        run.write_report()
        if options.keep_serving:
            try:
                run.keep_serving()
            except KeyboardInterrupt:  # the way to end --keep-serving: not a failure
                timeline.add("note", "Ctrl-C: stopping")
    except KeyboardInterrupt:
        timeline.add("failed", "interrupted: stopping everything the demo started")
        raise
    except Exception as e:
        timeline.add("failed", f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        raise
    finally:
        run.stop()
    return DemoResult(run.model, timeline, run.report_path, run.timeline_path)

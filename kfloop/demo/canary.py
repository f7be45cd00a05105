"""The demo's canaries, and the deliberately bad candidate's training data.

Both canaries use one plan and one set of thresholds: the canary strategy at
``DemoOptions.canary_steps`` (10% and 50%, then promotion), each step held for
``canary_hold_requests`` canary requests. v2's analysis is started by the trigger service itself
(``--auto_rollout canary``, flags from ``trigger_flags``) when the retraining run registers it; the
bad candidate, registered by the demo, is analysed by ``CanaryRunner`` (``run_analysis`` in a
thread). The thresholds are the analysis's defaults except: fewer requests and captured
predictions per step (so the demo stays short); more latency slack (the stack shares two cores
with training runs); a prediction divergence limit of 0.4 (two good models trained on different
samples differ by up to about 0.25 at these sizes, a model trained on inverted labels by about
0.6); and quality at most 20% worse, judged on at least 150 labeled rows a side (the sides serve
different customers: with fewer rows or a tighter limit, chance alone fails a step).
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from kfloop.demo.services import Background
from kfloop.errors import KfloopError
from kfloop.rollout.factory import RolloutOptions, make_target
from kfloop.store.objects import ObjectStore
from kfloop.store.registry import Registry
from kfloop.training.samples import churn

log = logging.getLogger(__name__)


def steps(options) -> list[int]:
    return [*options.canary_steps, 100]


def thresholds_text(options) -> str:
    """The analysis thresholds as ``Thresholds.parse`` (and the trigger's ``--rollout_thresholds``) read them."""
    return (
        f"divergence={options.max_divergence},p99_slack=50,quality_drop=0.2,min_labels=150,"
        f"min_requests={options.canary_hold_requests},min_predictions={options.min_predictions}"
    )


def trigger_flags(options, gateway_url: str) -> str:
    """The trigger service's flags that roll out each registered version through the demo's analysis."""
    return (
        f"--auto_rollout canary --rollout_target local --gateway_url {gateway_url} "
        f"--rollout_steps {','.join(map(str, steps(options)))} "
        f"--rollout_hold_requests {options.canary_hold_requests} --rollout_step_timeout {options.timeout / 2:g} "
        f"--rollout_thresholds {shlex.quote(thresholds_text(options))}"
    )


class CanaryRunner:
    """Canary analyses started by the demo, of versions of ``model`` on the gateway at ``gateway_url``."""

    def __init__(self, registry: Registry, store: ObjectStore, gateway_url: str, options, model: str, token_file=None):
        self.registry, self.store, self.gateway_url, self.options, self.model = (
            registry,
            store,
            gateway_url,
            options,
            model,
        )
        self.rollout = RolloutOptions(
            gateway_url=gateway_url, gateway_timeout=options.timeout, gateway_token_file=token_file
        )
        self.target = make_target(self.rollout)
        self.running: Background | None = None

    def status(self) -> dict:
        """The gateway's status of the model; empty when the gateway does not answer."""
        try:
            return self.target.status(self.model)
        except KfloopError:
            return {}

    def start(self, ref: str) -> Background:
        from kfloop.rollout.analysis import Thresholds, plan_for
        from kfloop.rollout.controller import run_analysis
        from kfloop.rollout.factory import make_source

        o = self.options
        plan = plan_for("canary", steps(o), hold_requests=o.canary_hold_requests, timeout_seconds=o.timeout / 2)
        thresholds = Thresholds.parse(thresholds_text(o))
        source = make_source(self.rollout, self.target, self.store, self.model)
        self.running = Background(
            "canary analysis",
            lambda: run_analysis(
                self.registry,
                self.target,
                source,
                self.model,
                ref,
                plan,
                thresholds,
                self.store,
                progress=log.info,
                event_source="kfloop/demo",
            ),
        )
        return self.running

    def stop(self, timeout: float = 5.0) -> None:
        """Give a running analysis a moment to end (it fails fast once the gateway is gone)."""
        if self.running is not None and not self.running.done():
            self.running.join(timeout)


def write_inverted_labels(path: Path, rows: int, seed: int, age_shift: float) -> Path:
    """Churn customers like today's traffic (``age_shift``) with every label inverted, as Parquet."""
    frame = churn(rows, seed, age_shift=age_shift)
    frame["churn"] = 1 - frame["churn"]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path

"""Prometheus metrics of the trigger service, read from the trigger's counters at scrape time.

- ``kfloop_trigger_events_total{type, outcome}``: events received, by the policy's action
  (start, waiting, duplicate, cooldown, in_flight, ignore, alert) or ``rejected`` (4xx) / ``error`` (5xx);
- ``kfloop_trigger_runs_started_total{target}``, ``kfloop_trigger_runs_finished_total{status}``;
- ``kfloop_trigger_runs_in_flight``; ``kfloop_trigger_outbox_{depth,delivered_total,dead_letters_total}``;
- with ``--auto_rollout``: ``kfloop_trigger_rollouts_total{outcome}``, finished canary analyses
  (promoted, rolled-back, aborted, failed) since the service started.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response


class TriggerCollector:
    def __init__(self, trigger):
        self.trigger = trigger

    def collect(self):
        events = CounterMetricFamily(
            "kfloop_trigger_events", "CloudEvents received, by type and outcome", labels=["type", "outcome"]
        )
        for (kind, outcome), n in sorted(self.trigger.events.items()):
            events.add_metric([kind, outcome], n)
        started = CounterMetricFamily("kfloop_trigger_runs_started", "retraining runs started", labels=["target"])
        finished = CounterMetricFamily("kfloop_trigger_runs_finished", "retraining runs finished", labels=["status"])
        for (what, label), n in sorted(self.trigger.runs.items()):
            (started if what == "started" else finished).add_metric([label], n)
        yield from (events, started, finished)
        yield GaugeMetricFamily(
            "kfloop_trigger_runs_in_flight", "models with a run in flight", value=len(self.trigger.in_flight_models())
        )
        stats = self.trigger.outbox.stats()
        yield GaugeMetricFamily(
            "kfloop_trigger_outbox_depth", "emitted events waiting for delivery", value=stats["depth"]
        )
        yield CounterMetricFamily(
            "kfloop_trigger_outbox_delivered", "emitted events delivered", value=stats["delivered"]
        )
        yield CounterMetricFamily(
            "kfloop_trigger_outbox_dead_letters", "emitted events the sink rejected", value=stats["dead_letters"]
        )
        auto = getattr(self.trigger, "auto_rollout", None)
        if auto is not None:
            rollouts = CounterMetricFamily(
                "kfloop_trigger_rollouts", "finished automatic rollouts, by outcome", labels=["outcome"]
            )
            for outcome, n in sorted(auto.outcomes.items()):
                rollouts.add_metric([outcome], n)
            yield rollouts


_registries: dict[int, CollectorRegistry] = {}


def metrics_response(trigger) -> Response:
    """The Prometheus text exposition of ``trigger``'s metrics."""
    registry = _registries.get(id(trigger))
    if registry is None:
        registry = _registries[id(trigger)] = CollectorRegistry(auto_describe=True)
        registry.register(TriggerCollector(trigger))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

"""The trigger's quality check: after labels arrive, score the model's labeled traffic in windows.

The threshold is ``QualityOptions.threshold`` when given, else derived from the model version's
own test metric (``metrics.json``): ``margin`` (a fraction) below it for a higher-is-better
metric, above it for an error. The ``QualityMonitor``'s state (which windows it has checked)
lives in the model's trigger state, so windows are reported once, also across restarts; it
starts over when the current model version changes.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from kfloop.errors import ConfigError
from kfloop.retraining.policy import TriggerState
from kfloop.store.objects import ObjectStore

if TYPE_CHECKING:  # pandas comes with the schema; loaded when labels arrive, not at start-up
    from kfloop.schema import FeatureSchema

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QualityOptions:
    """Which metric to watch (default: the task's), its threshold or the margin to derive one, the window."""

    metric: str | None = None
    threshold: float | None = None
    margin: float = 0.1
    window: int = 200

    def __post_init__(self):
        if not 0 <= self.margin < 1:
            raise ConfigError(f"quality margin is {self.margin!r}: expected a fraction in [0, 1)")


def check_quality(
    store: ObjectStore, state: TriggerState, record, schema: FeatureSchema, options: QualityOptions
) -> list[dict]:
    """Degraded windows of the model's labeled traffic not reported before (``io.kfloop.quality.degraded``
    data); updates ``state.quality``. No threshold known: nothing is checked."""
    from kfloop.monitoring.feedback import labeled_frame
    from kfloop.monitoring.quality import DEFAULT_METRIC, QualityMonitor

    stored = state.quality or {}
    if stored.get("version") == record.version and stored.get("monitor"):
        monitor = QualityMonitor.from_dict(stored["monitor"], schema)
    else:
        metric = options.metric or DEFAULT_METRIC[schema.task]
        threshold = (
            options.threshold if options.threshold is not None else derived_threshold(record, metric, options.margin)
        )
        if threshold is None:
            log.warning(
                "no quality threshold for %s: %s has no test %s and no --quality_threshold was given",
                state.model,
                record.ref,
                metric,
            )
            return []
        monitor = QualityMonitor(schema, metric, threshold, options.window, model=state.model)
    degraded = monitor.update(labeled_frame(store, state.model, schema))
    state.quality = {"version": record.version, "monitor": monitor.to_dict()}
    return degraded


def derived_threshold(record, metric: str, margin: float) -> float | None:
    """``margin`` below the version's test ``metric`` (above it for an error metric)."""
    from kfloop.training.evaluate import higher_is_better

    value = (record.metrics.get("metrics") or {}).get(metric)
    if not isinstance(value, (int, float)):
        return None
    return value * (1 - margin) if higher_is_better(metric) else value * (1 + margin)

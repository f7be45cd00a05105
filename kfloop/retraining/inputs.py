"""What a retraining run gets and what it gave: its training data, its pipeline arguments, and
(for a cluster run, whose outputs the trigger cannot read) the version it registered."""

from __future__ import annotations

from pathlib import Path

from kfloop.config import Settings
from kfloop.errors import DataError, ModelNotFound
from kfloop.names import key_segment
from kfloop.retraining.policy import RetrainPolicy
from kfloop.store.registry import Registry, VersionRecord
from kfloop.timestamps import epoch_seconds


def current_version(registry: Registry, model: str) -> VersionRecord | None:
    """The production version, else the latest; None when the model has no version."""
    record = registry.production(model)
    if record is None:
        try:
            record = registry.resolve(model)
        except ModelNotFound:
            return None
    return record


def training_data(
    settings: Settings,
    policy: RetrainPolicy,
    record: VersionRecord | None,
    model: str,
    run_name: str,
    original_source: str | None = None,
) -> dict:
    """The policy's retraining data (``build_training_data``) as a Parquet file; the original
    source is ``original_source`` or the version's lineage ``data_uri``. Without a registered
    version there is no schema to join labels with: the run trains on the original source."""
    original = original_source or (record.lineage.get("data_uri") if record else None)
    if not original:
        raise DataError(
            f"no training data for {model!r}: no registered version to take the data source "
            f"from and no --original_source"
        )
    if record is None:
        return {"source": original, "rows": None, "strategy": "original (no registered version yet)"}
    from kfloop.retraining.training_data import build_training_data
    from kfloop.schema import FeatureSchema

    out = Path(settings.home).resolve() / "trigger" / "data" / f"{key_segment(run_name)}.parquet"
    data = build_training_data(
        policy.strategy,
        settings,
        model,
        FeatureSchema.from_dict(record.schema),
        original,
        out,
        window_days=policy.window_days,
    )
    return {**data, "target": record.schema["target"]}


def drift_reference(
    settings: Settings, record: VersionRecord | None, model: str, run_name: str, event: dict | None, data: dict
) -> dict:
    """``data`` with the drift reference of a run that ``event`` (a drift event) started: the rows served
    since its window began (``kfloop.retraining.reference_data``); ``data`` unchanged for other runs."""
    from kfloop.retraining.reference_data import build_reference_data, drift_onset, drift_window_end

    since = drift_onset(event) if event and record is not None else None
    if since is None:
        return data
    from kfloop.schema import FeatureSchema

    out = Path(settings.home).resolve() / "trigger" / "data" / f"{key_segment(run_name)}-reference.parquet"
    schema, end = FeatureSchema.from_dict(record.schema), drift_window_end(event)
    return {**data, **build_reference_data(settings, model, schema, since, out, complete_after=end)}


def pipeline_arguments(policy: RetrainPolicy, model: str, data: dict, record: VersionRecord | None = None) -> dict:
    """The run's pipeline arguments: the data source, model name, target, the drift reference (a run
    started by drift, ``drift_reference``), the tuning arguments from the current version
    (``tuning_arguments``), then the policy's parameters (which win)."""
    arguments = {"source": data["source"], "model_name": model}
    if data.get("target"):
        arguments["target"] = data["target"]
    if data.get("drift_reference"):
        arguments["drift_reference"] = data["drift_reference"]
    return {**arguments, **tuning_arguments(policy.tuning, record), **policy.pipeline_params}


def tuning_arguments(choice: str, record: VersionRecord | None) -> dict:
    """For a version whose parameters were tuned (lineage ``tuning``): ``reuse`` passes the tuned
    values of the searched parameters and no tuning; ``retune`` passes the same search again (trials,
    budget, ranges). Nothing for a version that was not tuned, or no version."""
    tuning = (record.lineage.get("tuning") if record else None) or {}
    space = tuning.get("space") or {}
    if not space:
        return {}
    if choice == "reuse":
        parameters = record.lineage.get("parameters") or {}
        return {**{name: parameters[name] for name in space if name in parameters}, "tuning_trials": 0}
    from kfloop.training.tuning import DEFAULT_RANGES

    ranges = {name: [space[name]["low"], space[name]["high"]] if name in space else None for name in DEFAULT_RANGES}
    return {
        "tuning_trials": tuning["trials_requested"],
        "tuning_budget_seconds": tuning["budget_seconds"],
        "tuning_ranges": ranges,
    }


def registered_by(registry: Registry, model: str, run_id: str, started: float) -> tuple[str | None, str]:
    """``(NAME:VERSION, "")`` of the version a finished run registered (the run id in its lineage,
    else the first version created after the run started), or ``(None, why)``."""
    versions = registry.list_versions(model)
    for record in versions:
        if record.lineage.get("pipeline_run_id") == run_id:
            return record.ref, ""
    for record in versions:
        if epoch_seconds(record.created_at) >= started:
            return record.ref, ""
    return None, "the run registered no version (the quality gate did not pass; see its evaluate step)"

"""Scheduled retraining: the compiled training pipeline as a KFP recurring run (``kfp.Client``'s
recurring-run API), listed and deleted by id. The schedule is checked (``kfloop.retraining.schedule``)
before any call, so a malformed cron expression or duration never reaches the API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kfloop.errors import ConfigError, StorageError
from kfloop.pipelines.submit import _connect, _quiet_kfp, _short
from kfloop.retraining.schedule import parse_cron, parse_every

PAGE_SIZE = 100


def create_schedule(
    host: str,
    yaml_path: str | Path,
    arguments: dict,
    cron: str | None = None,
    every: str | None = None,
    experiment: str = "kfloop",
    name: str | None = None,
    namespace: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    progress: Callable[[str], None] = print,
    description: str = "kfloop scheduled retraining",
) -> dict:
    """A recurring run of the pipeline at ``yaml_path`` on ``cron`` (5 or 6 fields, or a descriptor) or
    ``every`` (a duration such as 6h), in ``experiment``; returns its id, name and schedule."""
    if (cron is None) == (every is None):
        raise ConfigError("give exactly one of a cron expression or an interval (--cron or --every)")
    cron_expression = parse_cron(cron) if cron is not None else None
    interval = parse_every(every) if every is not None else None
    if max_concurrency < 1:
        raise ConfigError(f"max concurrency {max_concurrency} must be >= 1")
    name = name or f"kfloop-{arguments.get('model_name', 'churn')}-retraining"
    try:
        with _quiet_kfp(progress):
            client = _connect(host, namespace)
            experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
            job = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=name,
                description=f"{description} ({_schedule_text(cron_expression, interval)})",
                interval_second=interval,
                cron_expression=cron_expression,
                max_concurrency=max_concurrency,
                no_catchup=not catchup,
                params=arguments,
                pipeline_package_path=str(yaml_path),
            )
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - kfp raises urllib3/ApiException types; report them plainly
        raise StorageError(f"Kubeflow Pipelines API at {host} refused or did not answer: {_short(e)}") from e
    result = {**_describe(job), "experiment": experiment, "host": host}
    progress(f"created recurring run {result['id']} ({name}) on {host}, experiment {experiment}: {result['schedule']}")
    return result


def list_schedules(
    host: str, experiment: str | None = None, namespace: str | None = None, progress=print
) -> list[dict]:
    """Every recurring run on ``host`` (or in ``experiment``), following the API's pages."""
    try:
        with _quiet_kfp(progress):
            client = _connect(host, namespace)
            experiment_id = None
            if experiment is not None:
                experiment_id = client.get_experiment(experiment_name=experiment, namespace=namespace).experiment_id
            jobs, token = [], ""
            while True:
                page = client.list_recurring_runs(
                    page_token=token, page_size=PAGE_SIZE, experiment_id=experiment_id, namespace=namespace
                )
                jobs += page.recurring_runs or []
                token = page.next_page_token
                if not token:
                    break
    except Exception as e:  # noqa: BLE001 - as in create_schedule
        raise StorageError(f"could not list the recurring runs on {host}: {_short(e)}") from e
    return [_describe(job) for job in jobs]


def delete_schedule(host: str, recurring_run_id: str, namespace: str | None = None, progress=print) -> None:
    """Delete the recurring run ``recurring_run_id`` (its past runs stay)."""
    if not recurring_run_id.strip():
        raise ConfigError("recurring run id is empty")
    try:
        with _quiet_kfp(progress):
            client = _connect(host, namespace)
            client.delete_recurring_run(recurring_run_id)
    except Exception as e:  # noqa: BLE001 - as in create_schedule
        if getattr(e, "status", None) == 404:
            raise ConfigError(f"no recurring run {recurring_run_id!r} on {host}") from None
        raise StorageError(f"could not delete recurring run {recurring_run_id!r} on {host}: {_short(e)}") from e


def _schedule_text(cron: str | None, interval: int | None) -> str:
    return f"cron {cron}" if cron is not None else f"every {interval}s"


def _describe(job) -> dict:
    trigger = job.trigger
    cron = getattr(getattr(trigger, "cron_schedule", None), "cron", None)
    interval = getattr(getattr(trigger, "periodic_schedule", None), "interval_second", None)
    return {
        "id": job.recurring_run_id,
        "name": job.display_name,
        "schedule": _schedule_text(cron, int(interval) if interval is not None else None),
        "status": str(job.status or "").upper() or None,
        "experiment_id": job.experiment_id,
        "parameters": dict(getattr(job.runtime_config, "parameters", None) or {}),
        "created_at": str(job.created_at) if job.created_at else None,
    }

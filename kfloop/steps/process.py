"""process: load raw data, check its quality, infer the schema, split train/valid/test."""

from __future__ import annotations

import logging
from pathlib import Path

from kfloop.config import Settings
from kfloop.schema import infer_schema
from kfloop.steps.common import write_json
from kfloop.training import split, validation
from kfloop.training.data import load_source

log = logging.getLogger(__name__)


def process(
    source: str,
    target: str,
    settings: Settings,
    train_path: str,
    valid_path: str,
    test_path: str,
    schema_path: str,
    report_path: str,
    task: str = "",
    seed: int = 0,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    rules: validation.QualityRules | None = None,
) -> dict:
    """Load, validate and split raw data; a quality violation raises ``DataQualityError``."""
    loaded = load_source(source, settings)
    report = validation.validate(loaded.frame, target, rules or validation.QualityRules())
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(report.to_markdown())
    report.raise_for_violations()
    schema = infer_schema(loaded.frame, target, task or None)
    parts = split.split(
        loaded.frame, target, schema.task, seed=seed, valid_fraction=valid_fraction, test_fraction=test_fraction
    )
    for frame, path in zip(parts, (train_path, valid_path, test_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    write_json(schema_path, schema.to_dict())
    log.info(
        "processed %d rows from %s: task %s, %d features",
        len(loaded.frame),
        loaded.uri,
        schema.task,
        len(schema.features),
    )
    return {"data_uri": loaded.uri, "data_sha256": loaded.sha256, "rows": len(loaded.frame), "task": schema.task}

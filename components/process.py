"""process: load raw data, validate its quality, infer the schema, split train/valid/test."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Markdown, Output


def process(
    source: str,
    target: str,
    task: str,
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    max_missing_rate: float,
    train: Output[Dataset],
    valid: Output[Dataset],
    test: Output[Dataset],
    schema: Output[Artifact],
    quality_report: Output[Markdown],
) -> NamedTuple("ProcessOutputs", [("data_uri", str), ("data_sha256", str), ("task", str)]):
    from kfloop.config import Settings
    from kfloop.steps.process import process as run_process
    from kfloop.training.validation import QualityRules

    result = run_process(
        source,
        target,
        Settings.from_env(),
        train.path,
        valid.path,
        test.path,
        schema.path,
        quality_report.path,
        task=task,
        seed=seed,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        rules=QualityRules(max_missing_rate=max_missing_rate),
    )
    return (result["data_uri"], result["data_sha256"], result["task"])

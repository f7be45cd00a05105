"""evaluate: test-split metrics of the candidate and of production, and the quality gate."""

from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    model: Input[Model],
    test: Input[Dataset],
    model_name: str,
    threshold: float,
    tolerance: float,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
) -> bool:
    from kfloop.components.kfp_metrics import log_evaluation
    from kfloop.config import Settings
    from kfloop.steps.evaluate import evaluate_model

    doc = evaluate_model(model.path, test.path, model_name, Settings.from_env(), evaluation.path, threshold, tolerance)
    log_evaluation(doc, metrics, classification_metrics)
    return doc["gate"]["passed"]  # one unnamed output: kfp.local's dsl.If resolves only "Output"

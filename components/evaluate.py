"""evaluate: test-split metrics of the candidate and of production, the naive baseline (from the training
split's labels), and the quality gate (``threshold`` -1: derived from the baseline); with a
``sensitive_feature``, the bias check (``bias_action``: "" report only, "reject", "approval")."""

from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    model: Input[Model],
    test: Input[Dataset],
    train: Input[Dataset],
    model_name: str,
    threshold: float,
    tolerance: float,
    sensitive_feature: str,
    bias_action: str,
    bias_min_di: float,
    bias_max_di: float,
    bias_max_dppl: float,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
) -> bool:
    from kfloop.components.kfp_metrics import log_evaluation
    from kfloop.config import Settings
    from kfloop.steps.evaluate import evaluate_model

    settings = Settings.from_env()
    bias = {
        "action": bias_action,
        "min_disparate_impact": bias_min_di,
        "max_disparate_impact": bias_max_di,
        "max_dppl": bias_max_dppl,
    }
    doc = evaluate_model(
        model.path,
        test.path,
        model_name,
        settings,
        evaluation.path,
        threshold,
        tolerance,
        train_path=train.path,
        sensitive_feature=sensitive_feature,
        bias=bias,
    )
    log_evaluation(doc, metrics, classification_metrics)
    return doc["gate"]["passed"]  # one unnamed output: kfp.local's dsl.If resolves only "Output"

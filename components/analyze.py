"""analyze: bias per group of a sensitive feature and global SHAP feature importance."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def analyze(
    model: Input[Model],
    test: Input[Dataset],
    evaluation: Input[Artifact],
    sensitive_feature: str,
    analysis: Output[Artifact],
    report: Output[Markdown],
):
    from kfloop.steps.analyze import analyze as run_analysis

    run_analysis(model.path, test.path, sensitive_feature, analysis.path, report.path, evaluation.path)

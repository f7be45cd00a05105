"""register: write the model bundle as the next version in the model registry."""

from kfp.dsl import Artifact, Input, Model


def register(
    model: Input[Model],
    evaluation: Input[Artifact],
    analysis: Input[Artifact],
    detector: Input[Artifact],
    signals: Input[Artifact],
    model_name: str,
    data_uri: str,
    data_sha256: str,
    require_approval: bool,
    run_id: str,
    run_name: str,
) -> str:
    import kfloop
    from kfloop.config import Settings
    from kfloop.steps.register import register as run_registration

    lineage = {
        "data_uri": data_uri,
        "data_sha256": data_sha256,
        "pipeline_run_id": run_id,
        "pipeline_run_name": run_name,
        "kfloop_version": kfloop.__version__,
    }
    record = run_registration(
        model_name,
        Settings.from_env(),
        model.path,
        evaluation.path,
        analysis.path,
        detector.path,
        lineage,
        require_approval,
        signals_dir=signals.path,
    )
    return record.ref

"""baseline: fit the drift detector's reference on the training features (or on ``drift_reference``), and
the baseline statistics and constraints (the prediction reference on the validation split), for serving."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def baseline(
    model: Input[Model],
    train: Input[Dataset],
    valid: Input[Dataset],
    drift_backend: str,
    drift_p_val: float,
    drift_reference: str,
    detector: Output[Artifact],
):
    from kfloop.config import Settings
    from kfloop.steps.baseline import fit_drift_baseline

    fit_drift_baseline(
        model.path,
        train.path,
        detector.path,
        backend=drift_backend,
        p_val=drift_p_val,
        reference=drift_reference,
        settings=Settings.from_env(),
        valid_path=valid.path,
    )

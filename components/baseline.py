"""baseline: fit the drift detector's reference on the training features, and the baseline statistics
and constraints (the prediction reference on the validation split), for serving."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def baseline(
    model: Input[Model],
    train: Input[Dataset],
    valid: Input[Dataset],
    drift_backend: str,
    drift_p_val: float,
    detector: Output[Artifact],
):
    from kfloop.steps.baseline import fit_drift_baseline

    fit_drift_baseline(
        model.path, train.path, detector.path, backend=drift_backend, p_val=drift_p_val, valid_path=valid.path
    )

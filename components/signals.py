"""signal-baselines: the monitoring signals' training-time references (attribution, quality estimator)."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def signal_baselines(model: Input[Model], valid: Input[Dataset], baselines: Output[Artifact]):
    from kfloop.steps.signals import fit_signal_baselines

    fit_signal_baselines(model.path, valid.path, baselines.path)

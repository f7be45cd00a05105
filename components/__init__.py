"""KFP v2 components of the training, batch and monitoring pipelines, one per module.

Each module holds a plain function typed with KFP artifacts; its body only maps artifact
paths to a ``kfloop.steps`` function, so the same code runs under ``kfp.local`` and in the
project image on a cluster. ``build_components(image)`` turns them into containerized
components (``base_image`` = the project image built from ``components/Dockerfile``).
"""

from __future__ import annotations

import types

from kfp import dsl

from kfloop.components.analyze import analyze
from kfloop.components.baseline import baseline
from kfloop.components.batch import batch_predict
from kfloop.components.deploy import deploy
from kfloop.components.evaluate import evaluate
from kfloop.components.monitor import monitor
from kfloop.components.process import process
from kfloop.components.register import register
from kfloop.components.signals import signal_baselines
from kfloop.components.train import train
from kfloop.components.tune import tune

STEPS = (
    process,
    tune,
    train,
    evaluate,
    analyze,
    baseline,
    signal_baselines,
    register,
    deploy,
    batch_predict,
    monitor,
)


def build_components(image: str) -> types.SimpleNamespace:
    """The pipeline's components, each running on ``image``; the image has kfp installed."""
    return types.SimpleNamespace(
        **{fn.__name__: dsl.component(fn, base_image=image, install_kfp_package=False) for fn in STEPS}
    )

"""kfloop: closed-loop MLOps for tabular XGBoost models on Kubeflow Pipelines and KServe.

The package is layered; each subpackage's docstring says what it owns and what it may import, and
``lint-imports`` (the contract in ``pyproject.toml``) checks that nothing imports upwards::

    cli                                      the ``kfloop`` command (entry point)
    demo                                     ``kfloop demo``: the loop on one machine
    serving                                  KServe model servers, trigger service, local platform
    pipelines -> components -> steps         KFP pipelines, their components, the steps as functions
    report | retraining | rollout | batch    what the loop decides and shows; batch inference
    monitoring                               capture, drift, feedback, quality of served traffic
    training | inference | events            models and data; the V1/V2 codec; CloudEvents
    store                                    object storage, model registry, bundles, event log
    schema, config, names, timestamps,       leaves: the feature schema, settings, names that cross
    processes, retry, auth, errors           processes, RFC 3339 times, child processes, the
                                             control token, errors

``components/``, ``pipelines/`` and ``serving/`` sit at the top of the repository and are installed as
``kfloop.components``, ``kfloop.pipelines`` and ``kfloop.serving``: thin glue over the core below them.
"""

__version__ = "0.1.0"

"""The pipeline's steps as ordinary functions over file paths, one module per step.

Each KFP component in ``components/`` is a thin wrapper that maps its artifact paths to one of
these functions; the benchmark calls them directly in one process (the floor the pipeline is
measured against), and tests call them without KFP. Artifacts:

- process: train/valid/test Parquet files, ``schema.json``, a Markdown data-quality report
- tune: ``{"parameters", "tuning"}`` JSON: the parameters train uses (searched, or as given) and the search's record
- train: a model folder with ``model.ubj`` (UBJSON), ``schema.json``, ``params.json`` (and ``tuning.json`` when tuned)
- evaluate: ``evaluation.json`` (metrics of candidate and production, gate decision)
- analyze: ``bias.json`` (bias and feature importance) and a Markdown report
- baseline: the drift detector folder (``kfloop.monitoring.drift``)
- signals: the monitoring signals' baselines (attribution, quality estimator), at their bundle paths
- register: a model bundle (``kfloop.store.bundle``) registered as the next version

Each step module imports only what that step needs, so each step's process starts quickly:
``from kfloop.steps.train import train_model``.
"""

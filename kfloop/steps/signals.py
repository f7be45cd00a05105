"""signal-baselines: what the monitoring signals compare served windows with, fitted on the validation
split: the training attribution (mean |SHAP| per feature) and the quality estimator (an isotonic
calibrator per class, or the regressor's residual models). The output folder holds them at their
bundle paths (``signals/...``, ``kfloop.store.bundle``), so the load functions read it as they read a
bundle, and the register step copies its ``signals/`` into the bundle."""

from __future__ import annotations

import logging

import pandas as pd

from kfloop.monitoring.attribution import attribution_baseline, save_attribution_baseline
from kfloop.monitoring.estimation import fit_estimator
from kfloop.steps.common import load_model_dir

log = logging.getLogger(__name__)


def fit_signal_baselines(model_dir: str, valid_path: str, out_dir: str) -> dict:
    """Write ``signals/attribution.json`` and ``signals/calibration.json`` (+ residual models) under ``out_dir``."""
    booster, schema = load_model_dir(model_dir)
    valid = pd.read_parquet(valid_path)
    attribution = attribution_baseline(booster, schema, schema.encode_frame(valid))
    save_attribution_baseline(attribution, out_dir)
    estimator = fit_estimator(booster, schema, valid)
    estimator.save(out_dir)
    log.info("signal baselines on %d validation rows: reference %s", len(valid), estimator.reference)
    return {"attribution": attribution, "reference": estimator.reference}

"""register: assemble the model bundle and register it as the next version."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from kfloop.config import Settings
from kfloop.steps.common import PARAMS_FILE, TUNING_FILE, read_json
from kfloop.store import bundle
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry

log = logging.getLogger(__name__)


def assemble_bundle(
    model_dir: str,
    evaluation_path: str,
    analysis_path: str | None,
    drift_dir: str,
    out_dir: str | Path,
    signals_dir: str | None = None,
) -> Path:
    """Copy the step outputs into one bundle folder and write its manifest."""
    out = Path(out_dir)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    shutil.copyfile(evaluation_path, out / bundle.METRICS_FILE)
    if analysis_path and Path(analysis_path).is_file():
        shutil.copyfile(analysis_path, out / bundle.BIAS_FILE)
    shutil.copytree(drift_dir, out / bundle.DRIFT_DIR, dirs_exist_ok=True)
    if signals_dir and (Path(signals_dir) / bundle.SIGNALS_DIR).is_dir():  # the signal-baselines step's output
        shutil.copytree(Path(signals_dir) / bundle.SIGNALS_DIR, out / bundle.SIGNALS_DIR, dirs_exist_ok=True)
    write_stock_booster(out)
    bundle.write_manifest(out)
    return out


def write_stock_booster(root: str | Path) -> Path | None:
    """For an all-numeric model, the bundle's booster without feature names and types as
    ``stock/model.ubj``, which KServe's stock xgbserver loads and predicts from lists of encoded
    rows (in schema order); None for a model with categorical features (the stock runtime cannot
    mark a column categorical)."""
    import xgboost

    root = Path(root)
    schema = bundle.load_schema(root)
    if any(f.kind == "categorical" for f in schema.features):
        log.info("no stock-runtime booster: %s has categorical features", root)
        return None
    booster = xgboost.Booster(model_file=str(root / bundle.MODEL_FILE))
    booster.feature_names, booster.feature_types = None, None
    path = root / bundle.STOCK_MODEL_FILE
    path.parent.mkdir(exist_ok=True)
    booster.save_model(str(path))
    return path


def register(
    model_name: str,
    settings: Settings,
    model_dir: str,
    evaluation_path: str,
    analysis_path: str | None,
    drift_dir: str,
    lineage: dict,
    require_approval: bool = False,
    signals_dir: str | None = None,
):
    """Register the assembled bundle as the next version of ``model_name``; returns the record.

    It starts as pending-approval when ``require_approval`` is set or when the evaluation's bias
    check failed with the action "approval" (``kfloop.training.evaluate.BIAS_ACTIONS``)."""
    registry = Registry(open_store(settings))
    bias_gate = read_json(evaluation_path).get("bias_gate") or {}
    bias_hold = not bias_gate.get("passed", True) and bias_gate.get("action") == "approval"
    with tempfile.TemporaryDirectory() as tmp:
        path = assemble_bundle(
            model_dir, evaluation_path, analysis_path, drift_dir, Path(tmp) / "bundle", signals_dir=signals_dir
        )
        stage = "pending-approval" if require_approval or bias_hold else "staging"
        lineage = {
            **lineage,
            **({"approval_reason": bias_gate["reason"]} if bias_hold else {}),
            "parameters": read_json(Path(model_dir) / PARAMS_FILE),
            "tuning": _tuning_summary(Path(model_dir) / TUNING_FILE),
            "parent_version": getattr(registry.production(model_name), "version", None),
        }
        record = registry.register(model_name, path, lineage=lineage, stage=stage)
    log.info("registered %s (%s) at %s", record.ref, record.stage, record.bundle_uri)
    return record


def _tuning_summary(path: Path) -> dict | None:
    """The lineage's record of the tuning that chose the parameters (None: not tuned); every
    trial stays in the bundle's ``tuning.json``."""
    if not path.is_file():
        return None
    doc = read_json(path)
    return {k: v for k, v in doc.items() if k != "trials"}

"""A model bundle: the folder that holds one model version, as KServe mounts it at /mnt/models.

Layout (every file is listed with its SHA-256 in ``MANIFEST.json``)::

    model.ubj          the XGBoost booster in its own UBJSON format (never pickled)
    schema.json        the feature schema (kfloop.schema.FeatureSchema.to_dict)
    metrics.json       evaluation metrics and the gate decision
    bias.json          bias and explainability results (when computed)
    drift/             the drift detector reference (kfloop.monitoring.drift, Alibi Detect's save_detector)
    drift/statistics.json, drift/constraints.json
                       the baseline statistics and the data-quality and prediction-drift constraints
                       (kfloop.monitoring.constraints; absent in bundles registered before them)
    signals/           monitoring baselines fitted at training on the validation split (when present):
                       attribution.json (mean |SHAP| per feature, kfloop.monitoring.attribution),
                       calibration.json (isotonic calibrator per class, or the residual models' summary)
                       and, for regressors, residual_abs.ubj / residual_sq.ubj (kfloop.monitoring.estimation)
    stock/model.ubj    all-numeric models only: the same trees without feature names and types, for
                       KServe's stock ``kserve-xgbserver`` runtime (it builds an unnamed ``DMatrix``
                       from the request's lists, which a booster with names refuses); its storageUri
                       is the ``stock/`` folder (the runtime wants exactly one booster file there)
    MANIFEST.json      {"files": {relative path: {"sha256", "size"}}}

``verify_bundle`` checks every file before a model is used; a missing, extra or changed
file raises ``ChecksumError``.

A bundle holds no version number (there is no ``version.json``): the register step assembles it
before the registry numbers it, and the same files may be registered under any version. The
version is the registry record's (``kfloop.store.registry``); the servers take it from the registry
reference they are started with, or from ``--model_version``.
"""

from __future__ import annotations

import json
from pathlib import Path

from kfloop.errors import ChecksumError
from kfloop.store.objects import sha256_file

MANIFEST = "MANIFEST.json"
MODEL_FILE = "model.ubj"
SCHEMA_FILE = "schema.json"
METRICS_FILE = "metrics.json"
BIAS_FILE = "bias.json"
DRIFT_DIR = "drift"
STATISTICS_FILE = "statistics.json"  # in DRIFT_DIR: what the training data and predictions looked like
CONSTRAINTS_FILE = "constraints.json"  # in DRIFT_DIR: what a served window may not do
STOCK_DIR = "stock"
SIGNALS_DIR = "signals"
ATTRIBUTION_FILE = f"{SIGNALS_DIR}/attribution.json"
CALIBRATION_FILE = f"{SIGNALS_DIR}/calibration.json"
RESIDUAL_ABS_FILE = f"{SIGNALS_DIR}/residual_abs.ubj"
RESIDUAL_SQ_FILE = f"{SIGNALS_DIR}/residual_sq.ubj"
STOCK_MODEL_FILE = f"{STOCK_DIR}/{MODEL_FILE}"


def bundle_files(root: str | Path) -> list[str]:
    """Relative paths of the bundle's files (not the manifest), sorted."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(root: str | Path) -> dict:
    """Checksum every file of the bundle and write ``MANIFEST.json``; returns the manifest."""
    root = Path(root)
    files = {
        rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size} for rel in bundle_files(root)
    }
    manifest = {"files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ChecksumError(f"{root} has no {MANIFEST}: not a kfloop model bundle")
    return json.loads(path.read_text())


def verify_bundle(root: str | Path) -> dict:
    """Verify every file against the manifest; returns the manifest."""
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest["files"]
    present = set(bundle_files(root))
    if missing := sorted(set(listed) - present):
        raise ChecksumError(f"bundle {root} is missing {missing}")
    if extra := sorted(present - set(listed)):
        raise ChecksumError(f"bundle {root} has files not in its manifest: {extra}")
    for rel, entry in listed.items():
        actual = sha256_file(root / rel)
        if actual != entry["sha256"]:
            raise ChecksumError(f"{root / rel}: checksum mismatch (manifest {entry['sha256']}, file {actual})")
    return manifest


def verify_files(root: str | Path, files: list[str]) -> None:
    """Check ``files`` (relative paths) against the manifest when ``root`` has one (a bundle, not a
    step's output folder): each must be listed there with its checksum; ``ChecksumError`` if not."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        return
    listed = read_manifest(root)["files"]
    for rel in files:
        entry = listed.get(rel)
        if entry is None or sha256_file(root / rel) != entry["sha256"]:
            raise ChecksumError(f"{root / rel} does not match the bundle's manifest (missing there, or changed)")


def load_schema(root: str | Path):
    from kfloop.schema import FeatureSchema

    return FeatureSchema.from_dict(json.loads((Path(root) / SCHEMA_FILE).read_text()))

"""Small helpers the steps share: JSON files and model folders."""

from __future__ import annotations

import json
from pathlib import Path

from kfloop.schema import FeatureSchema
from kfloop.store import bundle

PARAMS_FILE = "params.json"
TUNING_FILE = "tuning.json"  # the tune step's record, when the parameters were tuned


def write_json(path: str | Path, doc: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def read_schema(path: str | Path) -> FeatureSchema:
    return FeatureSchema.from_dict(read_json(path))


def load_model_dir(model_dir: str | Path):
    """The booster and schema of a model folder or bundle."""
    from kfloop.training.booster import load_model

    model_dir = Path(model_dir)
    return load_model(model_dir / bundle.MODEL_FILE), bundle.load_schema(model_dir)

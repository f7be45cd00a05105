"""The feature schema, and the encoding that turns rows into the model's input matrix.

``FeatureSchema.encode_frame`` and ``encode_columns`` encode training and evaluation data: numeric
features become float32, categorical values become the index of the value in the schema's sorted
``categories`` (what XGBoost's native categorical support expects as codes), and missing or unseen
values become NaN, which XGBoost treats as missing.

Serving decodes request JSON with ``kfloop.inference.requests.RequestDecoder``, which encodes the same
way without pandas: this pandas encoder costs ~330 us for one request row, too much for the serving
path (see that module). Tests hold the two equal, so there is no training/serving skew.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from kfloop.errors import ConfigError, DataQualityError

Kind = Literal["numeric", "categorical"]
Task = Literal["binary", "multiclass", "regression"]
TASKS = ("binary", "multiclass", "regression")
MAX_CLASSES_FOR_AUTO_CLASSIFICATION = 20


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        return out


@dataclasses.dataclass(frozen=True)
class FeatureSchema:
    """Feature names and kinds in model order, the target column and the task.

    ``classes`` holds the target's labels (as strings, sorted) for classification; the model
    predicts the index of a label in it.
    """

    target: str
    task: Task
    features: tuple[Feature, ...]
    classes: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == "categorical"]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost feature types: ``q`` (quantitative) or ``c`` (categorical)."""
        return ["c" if f.kind == "categorical" else "q" for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "task": self.task,
            "classes": list(self.classes),
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FeatureSchema:
        features = tuple(Feature(f["name"], f["kind"], tuple(f.get("categories", ()))) for f in doc["features"])
        return cls(doc["target"], doc["task"], features, tuple(doc.get("classes", ())))

    # -- encoding ----------------------------------------------------------------------------

    def encode_frame(self, df: pd.DataFrame) -> np.ndarray:
        """The model's float32 input matrix for a DataFrame that has every feature column."""
        missing = [n for n in self.names if n not in df.columns]
        if missing:
            raise DataQualityError(missing[0], "required_columns", f"missing feature columns {missing}")
        return self.encode_columns({n: df[n].to_numpy() for n in self.names}, len(df))

    def encode_columns(self, columns: Mapping[str, Sequence | np.ndarray], n_rows: int) -> np.ndarray:
        """Encode column arrays (keyed by feature name) into an ``[n_rows, n_features]`` float32 matrix."""
        out = np.empty((n_rows, len(self.features)), dtype=np.float32)
        for j, feature in enumerate(self.features):
            values = columns[feature.name]
            if feature.kind == "categorical":
                out[:, j] = encode_categories(values, feature.categories)
            else:
                out[:, j] = to_numeric(values, feature.name)
        return out

    def decode_labels(self, y: np.ndarray) -> np.ndarray:
        """Class indices back to labels (classification); values unchanged for regression."""
        if self.task == "regression":
            return y
        return np.asarray(self.classes, dtype=object)[y.astype(int)]

    def encode_labels(self, values: Iterable) -> np.ndarray:
        """Target values to the model's label space: class index (float32) or the value itself."""
        series = pd.Series(list(values) if not isinstance(values, (pd.Series, np.ndarray)) else values)
        if self.task == "regression":
            return to_numeric(series.to_numpy(), self.target)
        index = {c: i for i, c in enumerate(self.classes)}
        labels = series.map(lambda v: index.get(label_key(v), -1)).to_numpy()
        if (labels < 0).any():
            bad = series[labels < 0].iloc[0]
            raise DataQualityError(self.target, "known_labels", f"label {bad!r} is not one of {list(self.classes)}")
        return labels.astype(np.float32)


def label_key(value: Any) -> str:
    """Labels are kept as strings; integral floats (1.0) are written as ints ("1")."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    return str(value)


def encode_categories(values: Sequence | np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Category codes as float32; missing or unseen values are NaN."""
    codes = pd.Categorical(pd.Series(values, dtype=object).map(_category_key), categories=list(categories)).codes
    out = codes.astype(np.float32)
    out[codes < 0] = np.nan
    return out


def _category_key(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return label_key(value)


def to_numeric(values: Sequence | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float32)
    try:
        return pd.to_numeric(pd.Series(arr, dtype=object), errors="raise").to_numpy(dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise DataQualityError(name, "numeric_type", f"expected numbers, got {e}") from e


def infer_task(target: pd.Series, task: str | None = None) -> Task:
    """The task from a parameter, or from the target: few distinct values or non-numeric -> classification."""
    if task:
        if task not in TASKS:
            raise ConfigError(f"task {task!r} is not one of {TASKS}")
        return task  # type: ignore[return-value]
    values = target.dropna()
    n_unique = values.nunique()
    numeric = pd.api.types.is_numeric_dtype(values)
    if numeric and (pd.api.types.is_float_dtype(values) and not np.all(np.mod(values, 1) == 0)):
        return "regression"
    if numeric and n_unique > MAX_CLASSES_FOR_AUTO_CLASSIFICATION:
        return "regression"
    return "binary" if n_unique <= 2 else "multiclass"


def infer_schema(
    df: pd.DataFrame, target: str, task: str | None = None, categorical: Iterable[str] = ()
) -> FeatureSchema:
    """Schema of ``df``: object/string/category/bool columns (and ``categorical``) are categorical."""
    if target not in df.columns:
        raise DataQualityError(target, "target_present", f"target column not found; columns are {list(df.columns)}")
    forced = set(categorical)
    features = []
    for name in df.columns:
        if name == target:
            continue
        col = df[name]
        if name in forced or not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            cats = tuple(sorted({label_key(v) for v in col.dropna().unique()}))
            features.append(Feature(str(name), "categorical", cats))
        else:
            features.append(Feature(str(name), "numeric"))
    chosen = infer_task(df[target], task)
    classes: tuple[str, ...] = ()
    if chosen != "regression":
        classes = tuple(sorted({label_key(v) for v in df[target].dropna().unique()}, key=_natural))
        if chosen == "binary" and len(classes) != 2:
            raise DataQualityError(target, "binary_target", f"binary task needs 2 classes, found {list(classes)}")
    return FeatureSchema(target, chosen, tuple(features), classes)


def _natural(label: str) -> tuple:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)

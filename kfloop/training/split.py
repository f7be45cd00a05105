"""Train/validation/test split: deterministic for a seed, stratified by class for classification.

Rows are drawn with one ``numpy`` permutation and grouped by class with a stable sort, so a
1M-row frame splits in well under a second and the same seed always gives the same parts. Each
part keeps the original row order and gets a fresh ``RangeIndex``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from kfloop.errors import ConfigError, DataError, DataQualityError
from kfloop.schema import TASKS

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
MIN_PER_CLASS = 3  # one row for each of train, valid and test


def split(
    df: pd.DataFrame, target: str, task: str, seed: int = 0, valid_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into ``(train, valid, test)``, each non-empty.

    For ``binary`` and ``multiclass`` every class is split in the same proportions. A multiclass
    class with fewer than 3 rows cannot be in all three parts: its rows all go to train (so the
    model still knows the class) and a warning is logged. In a binary task that is an error,
    because validation and test metrics need both classes.
    """
    _check_args(task, valid_fraction, test_fraction)
    if target not in df.columns:
        raise DataQualityError(target, "target_present", f"target column not found; columns are {list(df.columns)}")
    if len(df) < 3:
        raise DataError(f"cannot split {len(df)} rows into non-empty train, valid and test parts; need at least 3")
    rng = np.random.default_rng(seed)
    if task == "regression":
        parts = _assign(rng.permutation(len(df)), valid_fraction, test_fraction)
    else:
        parts = _stratified_parts(df[target], task, rng, valid_fraction, test_fraction)
    return tuple(_take(df, parts == p, name) for p, name in ((TRAIN, "train"), (VALID, "valid"), (TEST, "test")))


def _check_args(task: str, valid_fraction: float, test_fraction: float) -> None:
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is not one of {TASKS}")
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name}={value} must be between 0 and 1 (exclusive)")
    if valid_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"valid_fraction + test_fraction = {valid_fraction + test_fraction:g} leaves no "
            "training rows; it must be below 1"
        )


def _stratified_parts(
    labels: pd.Series, task: str, rng: np.random.Generator, valid_fraction: float, test_fraction: float
) -> np.ndarray:
    """Part number per row, with each class split in the given proportions."""
    codes, classes = pd.factorize(labels, sort=True)
    if (codes < 0).any():
        raise DataQualityError(labels.name, "target_missing", f"{int((codes < 0).sum())} rows have no target value")
    counts = np.bincount(codes, minlength=len(classes))
    _check_rare(classes, counts, task, labels.name)
    order = rng.permutation(len(codes))
    order = order[np.argsort(codes[order], kind="stable")]  # rows grouped by class, random within a class
    parts = np.full(len(codes), TRAIN, dtype=np.int8)
    start = 0
    for count in counts:
        rows = order[start : start + count]
        start += count
        if count >= MIN_PER_CLASS:
            parts[rows] = _assign(np.arange(count), valid_fraction, test_fraction)
    return parts


def _check_rare(classes: pd.Index, counts: np.ndarray, task: str, target: object) -> None:
    rare = [f"{c!r} ({n} rows)" for c, n in zip(classes, counts) if n < MIN_PER_CLASS]
    if not rare:
        return
    if task == "binary" or len(rare) == len(classes):
        raise DataError(
            f"cannot stratify target {target!r}: classes {', '.join(rare)} have fewer than "
            f"{MIN_PER_CLASS} rows, too few to appear in train, valid and test"
        )
    log.warning("target %r: classes %s are too rare to stratify; all their rows go to train", target, ", ".join(rare))


def _assign(order: np.ndarray, valid_fraction: float, test_fraction: float) -> np.ndarray:
    """Part numbers for rows in random ``order``: the first go to test, the next to valid, the rest to train."""
    n = len(order)
    n_test = max(1, round(n * test_fraction))
    n_valid = max(1, round(n * valid_fraction))
    while n_test + n_valid > n - 1:  # keep at least one training row
        if n_test >= n_valid:
            n_test -= 1
        else:
            n_valid -= 1
    parts = np.full(n, TRAIN, dtype=np.int8)
    parts[order[:n_test]] = TEST
    parts[order[n_test : n_test + n_valid]] = VALID
    return parts


def _take(df: pd.DataFrame, mask: np.ndarray, name: str) -> pd.DataFrame:
    part = df.loc[mask].reset_index(drop=True)
    if len(part) == 0:
        raise DataError(f"the {name} part of the split is empty")
    return part

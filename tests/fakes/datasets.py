"""Small data sets made here, one per task: what the gate tests train on."""

from __future__ import annotations

import numpy as np
import pandas as pd


def regression_data(n: int = 600, seed: int = 0, signal: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.uniform(-2, 2, size=n)
    region = rng.choice(["north", "south", "east"], size=n)
    y = signal * (3 * x1 + x2**2 + np.where(region == "south", 2.0, 0.0)) + rng.normal(scale=1.0, size=n) + 50
    return pd.DataFrame({"x1": x1, "x2": x2, "region": region, "target": y})


def binary_data(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    plan = rng.choice(["basic", "pro"], size=n)
    logit = 1.5 * x1 - x2 + np.where(plan == "pro", 1.0, -0.5) - 1.0  # about 30% positives
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"x1": x1, "x2": x2, "plan": plan, "label": y})


def multiclass_data(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    species = np.select([x1 + 0.3 * rng.normal(size=n) > 0.5, x2 + 0.3 * rng.normal(size=n) > 0.0], ["a", "b"], "c")
    return pd.DataFrame({"x1": x1, "x2": x2, "species": species})


def noise_data(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Six features and a heavy-tailed target that ignores them: the trees fit noise."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(6)})
    frame["target"] = rng.standard_t(3, size=n) + 50
    return frame


def noisy(n: int, seed: int = 0) -> pd.DataFrame:
    """Two weak informative features among 18 noise features, noisy labels: the defaults (depth 6,
    no subsampling) overfit the small training split."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 20))
    y = np.where(X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 1.0, n) > 0, "yes", "no")
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(20)])
    frame["target"] = y
    return frame

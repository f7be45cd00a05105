"""Windowing of live rows for drift detection, with a real (scipy backend) detector."""

import numpy as np
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring import drift
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema("y", "regression", (Feature("x", "numeric"), Feature("c", "categorical", ("a", "b"))))


def rows(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(shift, 1.0, n), rng.integers(0, 2, n)].astype(np.float32)


@pytest.fixture(scope="module")
def detector():
    return drift.fit_baseline(SCHEMA, rows(1000, seed=0), backend="scipy")


def test_one_result_per_full_window_and_leftovers_wait(detector):
    windows = WindowedDrift(detector, window_size=100)
    assert windows.add(rows(60, 1)) == [] and windows.pending == 60
    assert len(windows.add(rows(250, 2))) == 3 and windows.pending == 10
    assert len(windows.add(rows(89, 3))) == 0 and windows.pending == 99
    assert len(windows.add(rows(1, 4))) == 1 and windows.pending == 0


def test_each_window_is_checked_on_exactly_its_rows(detector):
    stream = rows(530, seed=5)
    windows = WindowedDrift(detector, window_size=120)
    results = []
    for start, stop in [(0, 50), (50, 300), (300, 301), (301, 530)]:
        results += windows.add(stream[start:stop])
    assert [r["data"]["window_index"] for r in results] == [0, 1, 2, 3]
    for i, result in enumerate(results):
        expected = detector.predict(stream[i * 120 : (i + 1) * 120])["data"]
        assert {k: result["data"][k] for k in expected} == expected
        assert result["data"]["window_size"] == 120
        assert result["data"]["p_val_by_feature"] == dict(zip(["x", "c"], expected["p_val"]))
    assert windows.pending == 530 - 4 * 120


def test_drift_shows_in_the_windows_after_the_stream_shifts(detector):
    windows = WindowedDrift(detector, window_size=150)
    results = windows.add(np.vstack([rows(300, seed=6), rows(300, seed=7, shift=1.0)]))
    assert [r["data"]["is_drift"] for r in results] == [0, 0, 1, 1]


def test_a_single_row_can_be_added(detector):
    windows = WindowedDrift(detector, window_size=2)
    assert windows.add(np.array([0.1, 1.0])) == []
    assert len(windows.add([0.2, 0.0])) == 1


def test_bad_window_size_and_rows_are_reported(detector):
    with pytest.raises(ConfigError, match="window_size"):
        WindowedDrift(detector, window_size=0)
    with pytest.raises(DataError, match=r"\(4, 3\)"):
        WindowedDrift(detector, window_size=10).add(np.zeros((4, 3)))

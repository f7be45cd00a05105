"""Multivariate drift: the domain classifier catches a joint shift per-feature KS tests miss, and
stays quiet on clean windows of sample:churn."""

import numpy as np
import pytest

from kfloop.errors import ChecksumError, ConfigError, DataError
from kfloop.monitoring import drift
from kfloop.monitoring.multivariate import DEFAULT_THRESHOLD, multivariate_drift, reference_rows
from kfloop.schema import infer_schema
from kfloop.training.samples import churn

REFERENCE = churn(5000, seed=0)
SCHEMA = infer_schema(REFERENCE, "churn")
REF = SCHEMA.encode_frame(REFERENCE)


def _window(n=500, seed=1, **knobs):
    return SCHEMA.encode_frame(churn(n, seed=seed, **knobs))


def test_a_joint_shift_that_per_feature_tests_miss_is_caught():
    shifted = _window(seed=7, joint_shift=1.0)
    per_feature = drift.fit_baseline(SCHEMA, REF, backend="scipy").predict(shifted)
    assert per_feature["data"]["is_drift"] == 0  # marginals unchanged: KS/chi2 see nothing
    result = multivariate_drift(SCHEMA, REF, shifted)
    assert result.status == "alert" and result.value > DEFAULT_THRESHOLD
    top = [f["name"] for f in result.evidence["top_features"][:3]]
    assert "total_charges" in top  # the feature whose relation broke
    assert result.event_type == "io.kfloop.multivariate_drift.detected"


def test_clean_windows_stay_quiet():
    results = [multivariate_drift(SCHEMA, REF, _window(300, seed=100 + s), seed=s) for s in range(10)]
    assert all(r.status == "ok" for r in results)
    assert max(r.value for r in results) < 0.6


def test_seeded_and_deterministic():
    window = _window(seed=3, joint_shift=0.5)
    assert multivariate_drift(SCHEMA, REF, window, seed=4) == multivariate_drift(SCHEMA, REF, window, seed=4)


def test_a_small_window_is_insufficient_not_a_verdict():
    result = multivariate_drift(SCHEMA, REF, _window(40))
    assert result.status == "insufficient" and result.value is None
    assert "40 rows" in result.reason and "at least 100" in result.reason


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="expected \\(rows, 8\\)"):
        multivariate_drift(SCHEMA, REF, np.zeros((200, 3)))
    with pytest.raises(ConfigError, match="threshold"):
        multivariate_drift(SCHEMA, REF, _window(), threshold=1.5)
    with pytest.raises(ConfigError, match="folds"):
        multivariate_drift(SCHEMA, REF, _window(), folds=1)


def test_the_reference_can_come_from_a_bundle_drift_folder(tmp_path):
    frame = REFERENCE.copy()
    frame.loc[:10, "contract"] = None  # missing values survive the detector's codes
    frame.loc[:10, "age"] = float("nan")
    detector = drift.fit_baseline(SCHEMA, SCHEMA.encode_frame(frame), backend="scipy")
    drift.save_detector(detector, tmp_path / "drift")
    rows = reference_rows(tmp_path, SCHEMA)
    np.testing.assert_array_equal(rows, SCHEMA.encode_frame(frame))
    assert multivariate_drift(SCHEMA, rows, _window(seed=7, joint_shift=1.0)).status == "alert"
    (tmp_path / "MANIFEST.json").write_text('{"files": {}}')  # a bundle whose manifest does not list it
    with pytest.raises(ChecksumError, match="does not match the bundle's manifest"):
        reference_rows(tmp_path, SCHEMA)

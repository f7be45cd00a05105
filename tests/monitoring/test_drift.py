"""Drift detection: both backends on data generated here (a numeric and a categorical feature)."""

import json

import numpy as np
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring import drift
from kfloop.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    "y", "binary", (Feature("amount", "numeric"), Feature("color", "categorical", ("b", "g", "r"))), ("0", "1")
)
BASE_P = (0.5, 0.3, 0.2)


def sample(n, seed, shift=0.0, p=BASE_P, cat_nan=0.0, num_nan=0.0):
    """Rows as encode_columns makes them: float32, category codes 0..2, NaN for missing."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(10.0 + shift, 2.0, n)
    color = rng.choice(3, n, p=p).astype(float)
    amount[rng.random(n) < num_nan] = np.nan
    color[rng.random(n) < cat_nan] = np.nan
    return np.c_[amount, color].astype(np.float32)


REF = sample(2000, seed=1)
WINDOWS = {
    "clean": sample(300, seed=2),
    "clean_other_seed": sample(300, seed=3),
    "numeric_shift": sample(300, seed=4, shift=1.0),
    "category_shift": sample(300, seed=5, p=(0.2, 0.3, 0.5)),
    "unseen_categories": sample(300, seed=6, cat_nan=0.25),
    "numeric_missing": sample(300, seed=7, num_nan=0.3),
}
DRIFTED = {"numeric_shift": 0, "category_shift": 1, "unseen_categories": 1, "numeric_missing": 0}


@pytest.fixture(scope="module")
def detectors():
    return {b: drift.fit_baseline(SCHEMA, REF, backend=b) for b in drift.BACKENDS}


def test_few_false_positives_on_windows_from_the_reference_distribution(detectors):
    results = [detectors["scipy"].predict(sample(300, seed=100 + s))["data"] for s in range(40)]
    alarms = sum(r["is_drift"] for r in results)
    assert alarms <= 5  # Bonferroni at 0.05: about 2 of 40 expected
    # p-values under no drift are spread over [0, 1], not stuck near 0 or 1
    for j in range(2):
        assert 0.2 < np.median([r["p_val"][j] for r in results]) < 0.8


@pytest.mark.parametrize("backend", drift.BACKENDS)
@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_drift_is_found_in_the_changed_feature_only(detectors, backend, name):
    data = detectors[backend].predict(WINDOWS[name])["data"]
    below = [p < data["threshold"] for p in data["p_val"]]
    if name in DRIFTED:
        assert data["is_drift"] == 1
        assert below[DRIFTED[name]] and not below[1 - DRIFTED[name]]
    else:
        assert data["is_drift"] == 0 and not any(below)


@pytest.mark.parametrize("correction", drift.CORRECTIONS)
def test_backends_agree(correction):
    alibi = drift.fit_baseline(SCHEMA, REF, backend="alibi", correction=correction)
    scipy = drift.fit_baseline(SCHEMA, REF, backend="scipy", correction=correction)
    for name, window in WINDOWS.items():
        a, s = alibi.predict(window)["data"], scipy.predict(window)["data"]
        assert a["is_drift"] == s["is_drift"], name
        np.testing.assert_allclose(a["p_val"], s["p_val"], rtol=1e-5, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(a["distance"], s["distance"], rtol=1e-5, err_msg=name)
        assert a["threshold"] == pytest.approx(s["threshold"])
        # the reported threshold explains the decision, for FDR too
        assert s["is_drift"] == any(p < s["threshold"] for p in s["p_val"])


@pytest.mark.parametrize("backend", drift.BACKENDS)
def test_result_is_strict_json_with_alibi_envelope(detectors, backend):
    result = detectors[backend].predict(WINDOWS["unseen_categories"])
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert {"name", "detector_type", "data_type", "version", "backend"} <= set(result["meta"])
    assert result["meta"]["backend"] == backend and result["meta"]["feature_names"] == ["amount", "color"]
    assert set(result["data"]) == {"is_drift", "p_val", "threshold", "distance"}
    assert result["data"]["threshold"] == pytest.approx(0.05 / 2)


@pytest.mark.parametrize("backend", drift.BACKENDS)
def test_missing_values_in_reference_and_window_at_the_same_rate_are_no_drift(backend):
    ref = sample(2000, seed=11, cat_nan=0.1, num_nan=0.1)
    det = drift.fit_baseline(SCHEMA, ref, backend=backend)
    results = [det.predict(sample(300, seed=20 + s, cat_nan=0.1, num_nan=0.1))["data"] for s in range(3)]
    assert all(r["is_drift"] == 0 for r in results)
    assert all(p is not None for r in results for p in r["p_val"])


def test_prepare_puts_missing_and_unknown_codes_in_an_extra_bucket():
    spec = drift.fit_baseline(SCHEMA, REF, backend="scipy").spec
    X = np.array([[1.0, np.nan], [np.nan, 7.0], [2.0, -1.0], [3.0, 1.5], [4.0, 2.0]], dtype=np.float32)
    out = drift.prepare(X, spec)
    assert out[:, 1].tolist() == [3, 3, 3, 3, 2]
    assert out[:, 0].tolist() == [1, -np.inf, 2, 3, 4]
    assert np.isnan(X[1, 0])  # the input is not modified


@pytest.mark.parametrize("backend", drift.BACKENDS)
def test_save_load_round_trip_gives_identical_results(detectors, backend, tmp_path):
    folder = drift.save_detector(detectors[backend], tmp_path / "drift")
    spec = json.loads((folder / drift.SPEC_FILE).read_text())
    assert spec["backend"] == backend and spec["kinds"] == ["numeric", "categorical"]
    assert spec["feature_names"] == ["amount", "color"] and spec["p_val"] == 0.05
    loaded = drift.load_detector(folder)
    assert loaded.backend == backend
    for window in WINDOWS.values():
        assert loaded.predict(window)["data"] == detectors[backend].predict(window)["data"]


@pytest.mark.parametrize("saved, loaded", [("alibi", "scipy"), ("scipy", "alibi")])
def test_load_with_the_other_backend(detectors, saved, loaded, tmp_path):
    folder = drift.save_detector(detectors[saved], tmp_path / "drift")
    other = drift.load_detector(folder, backend=loaded)
    assert other.backend == loaded
    for window in WINDOWS.values():
        np.testing.assert_allclose(
            other.predict(window)["data"]["p_val"], detectors[loaded].predict(window)["data"]["p_val"], rtol=1e-5
        )


def test_large_reference_is_subsampled_deterministically(tmp_path):
    big = sample(5000, seed=9)
    det = drift.fit_baseline(SCHEMA, big, backend="scipy", max_ref_rows=500, seed=3)
    folder = drift.save_detector(det, tmp_path / "drift")
    x_ref = np.load(folder / drift.X_REF_FILE, allow_pickle=False)
    assert x_ref.shape == (500, 2)
    again = drift.fit_baseline(SCHEMA, big, backend="scipy", max_ref_rows=500, seed=3)
    other = drift.fit_baseline(SCHEMA, big, backend="scipy", max_ref_rows=500, seed=4)
    assert np.array_equal(again.x_ref, x_ref) and not np.array_equal(other.x_ref, x_ref)
    assert np.isin(x_ref[:, 0], big[:, 0]).all()


def test_bad_settings_and_inputs_are_reported(detectors, tmp_path):
    with pytest.raises(ConfigError, match="'tensorflow'"):
        drift.fit_baseline(SCHEMA, REF, backend="tensorflow")
    with pytest.raises(ConfigError, match="'holm'"):
        drift.fit_baseline(SCHEMA, REF, correction="holm")
    with pytest.raises(ConfigError, match="p_val"):
        drift.fit_baseline(SCHEMA, REF, p_val=5)
    with pytest.raises(DataError, match=r"\(300, 1\)"):
        detectors["scipy"].predict(WINDOWS["clean"][:, :1])
    folder = drift.save_detector(detectors["scipy"], tmp_path / "drift")
    with pytest.raises(ConfigError, match="'onnx'"):
        drift.load_detector(folder, backend="onnx")
    with pytest.raises(ConfigError, match=drift.SPEC_FILE):
        drift.load_detector(tmp_path)


def test_to_jsonable_turns_numpy_values_into_plain_json():
    value = {"a": np.float32(0.5), "b": np.arange(2), 3: (np.bool_(True), np.nan), "c": [np.int64(4)]}
    assert drift.to_jsonable(value) == {"a": 0.5, "b": [0, 1], "3": [True, None], "c": [4]}


@pytest.mark.parametrize("correction", drift.CORRECTIONS)
def test_correction_matches_alibi_on_many_p_value_vectors(correction):
    from alibi_detect.utils.statstest import fdr

    rng = np.random.default_rng(0)
    decisions = set()
    for n in range(1, 7):
        for _ in range(200):
            p = (rng.random(n) * rng.choice([0.02, 0.1, 1.0], n)).astype(np.float32)
            is_drift, threshold = drift._correct(p, 0.05, correction)
            expected = fdr(p, q_val=0.05) if correction == "fdr" else (int((p < 0.05 / n).any()), 0.05 / n)
            assert is_drift == expected[0]
            np.testing.assert_allclose(threshold, expected[1])
            decisions.add(is_drift)
    assert decisions == {0, 1}


class _TouchOnLoad:
    """Pickled, it creates ``marker`` when unpickled: what a crafted bundle could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_detector_folder_with_pickled_code_is_refused_and_nothing_runs(detectors, tmp_path):
    dill = pytest.importorskip("dill")  # Alibi Detect's own dependency: what its loader would use
    folder = drift.save_detector(detectors["alibi"], tmp_path / "drift")
    marker = tmp_path / "ran"
    (folder / "preprocess_fn.dill").write_bytes(dill.dumps(_TouchOnLoad(marker)))
    config = (folder / "config.toml").read_text()
    (folder / "config.toml").write_text(
        config.replace('preprocess_fn = "None"', 'preprocess_fn = "preprocess_fn.dill"')
    )
    for backend in drift.BACKENDS:
        with pytest.raises(ConfigError, match=r"pickled objects \['preprocess_fn.dill'\]"):
            drift.load_detector(folder, backend=backend)
    assert not marker.exists()


def test_a_config_naming_a_preprocessing_function_is_refused(detectors, tmp_path):
    folder = drift.save_detector(detectors["alibi"], tmp_path / "drift")
    config = (folder / "config.toml").read_text()
    assert 'preprocess_fn = "None"' in config  # what Alibi Detect 0.13 writes for kfloop's detectors
    (folder / "config.toml").write_text(config.replace('preprocess_fn = "None"', 'preprocess_fn = "fn/"'))
    with pytest.raises(ConfigError, match="names a preprocessing function"):
        drift.load_detector(folder)


def test_a_reference_that_is_not_a_plain_array_is_refused(detectors, tmp_path):
    folder = drift.save_detector(detectors["scipy"], tmp_path / "drift")
    np.save(folder / drift.X_REF_FILE, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="not a plain numeric array"):
        drift.load_detector(folder)


MIXED = FeatureSchema(
    "y",
    "binary",
    (
        Feature("real", "numeric"),
        Feature("whole", "numeric"),  # few distinct values: ties within and across the samples
        Feature("signed_zero", "numeric"),
        Feature("constant", "numeric"),
        Feature("three", "categorical", ("a", "b", "c")),
        Feature("two", "categorical", ("a", "b")),  # a 2 x 2 table: Yates' correction
        Feature("one", "categorical", ("a", "b")),  # one category in both: no degrees of freedom
    ),
    ("0", "1"),
)


def mixed(n, seed, shift=0.0, nan=0.05):
    rng = np.random.default_rng(seed)
    X = np.c_[
        rng.normal(shift, 1.0, n),
        rng.integers(0, 6, n) + round(shift),
        rng.choice([-0.0, 0.0, 1.0, -1.0], n),
        np.full(n, 3.0),
        rng.choice(3, n, p=(0.5, 0.3, 0.2) if not shift else (0.3, 0.3, 0.4)),
        rng.choice(2, n, p=(0.7, 0.3)),
        np.zeros(n),
    ].astype(np.float32)
    X[:, :3][rng.random((n, 3)) < nan] = np.nan
    X[:, 4][rng.random(n) < nan] = np.nan  # missing: a category of its own
    return X


@pytest.mark.parametrize("seed", range(12))
def test_scipy_backend_statistics_are_scipys_own(seed):
    """The precomputed reference gives what ``ks_2samp`` and ``chi2_contingency`` give on the same columns."""
    from scipy.stats import chi2_contingency, ks_2samp

    det = drift.fit_baseline(MIXED, mixed(3000 + seed, seed=seed), backend="scipy")
    window = mixed(rng_n := 100 + 60 * seed, seed=1000 + seed, shift=0.3 * (seed % 3))
    data = det.predict(window)["data"]
    ref, win = det.x_ref, drift.prepare(window, det.spec)
    assert len(win) == rng_n
    for j, feature in enumerate(MIXED.features):
        if feature.kind == "numeric":
            d, p = ks_2samp(ref[:, j], win[:, j], alternative="two-sided", method="asymp")[:2]
        else:
            cats = np.union1d(ref[:, j], win[:, j])
            table = np.vstack(
                [np.bincount(np.searchsorted(cats, c), minlength=len(cats)) for c in (ref[:, j], win[:, j])]
            )
            d, p = chi2_contingency(table)[:2]
        assert data["distance"][j] == pytest.approx(float(np.float32(d)), rel=1e-6, abs=1e-12), feature.name
        assert data["p_val"][j] == pytest.approx(float(np.float32(p)), rel=1e-5, abs=1e-30), feature.name
    assert data["p_val"][3] == 1.0 and data["p_val"][6] == 1.0  # a constant column and a single category


def test_p_values_computed_ahead_are_the_ones_a_window_would_compute():
    warmed, cold = (drift.fit_baseline(SCHEMA, REF, backend="scipy") for _ in range(2))
    steps = list(warmed.p_value_steps(300))
    assert len(steps) > 1  # one step per chunk
    [(sizes, known)] = warmed._ks_p.items()
    assert sizes == (len(REF), 300) and len(known) > 100
    for name, window in WINDOWS.items():
        before = len(known)
        assert warmed.predict(window)["data"]["p_val"] == cold.predict(window)["data"]["p_val"], name
        if name not in DRIFTED:
            assert len(known) == before, name  # a clean window's statistics were all computed ahead
    assert list(warmed.p_value_steps(300)) == []  # nothing left to compute

"""Batch answers equal a real predictor server's answers for the same rows, and the rows batch rejects
are the rows the predictor refuses."""

from __future__ import annotations

import math

import httpx
import pandas as pd
import pytest

from kfloop.batch.job import BatchOptions, run_batch
from tests.batch.conftest import register_churn
from tests.fakes.bundles import churn_frame
from tests.serving.conftest import PredictorProcess, start_predictors

pytestmark = pytest.mark.processes  # starts a predictor server on 127.0.0.1


def _json_value(value):
    return None if isinstance(value, float) and math.isnan(value) else value


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_predictions_equal_the_predictors_answers(local_settings, tmp_path, suffix):
    ref, schema = register_churn(local_settings, tmp_path / "bundle")
    frame = churn_frame(240, seed=9)
    frame["plan"] = frame["plan"].astype(object)
    frame.loc[[3, 100], "plan"] = ["enterprise", None]  # unseen and missing: both served as missing
    frame.loc[7, "charges"] = float("nan")
    if suffix == ".csv":
        frame["tenure"] = frame["tenure"].astype(object)
        frame.loc[50, "tenure"] = "twelve"  # the predictor refuses it; batch rejects it
        frame.to_csv(tmp_path / "in.csv", index=False)
    else:
        frame.to_parquet(tmp_path / "in.parquet", index=False)
    summary = run_batch(
        BatchOptions(ref, str(tmp_path / f"in{suffix}"), str(tmp_path / "out.parquet"), chunk_rows=64),
        local_settings,
        lambda _: None,
    )
    out = pd.read_parquet(tmp_path / "out.parquet").set_index("row")
    (predictor,) = start_predictors(PredictorProcess(tmp_path / "bundle", "churn"))
    try:
        url = f"{predictor.url}/v1/models/churn:predict"
        rows = [{k: _json_value(v) for k, v in row.items()} for row in frame[schema.names].to_dict("records")]
        accepted = [i for i in range(len(rows)) if i not in (50,) or suffix == ".parquet"]
        answer = httpx.post(url, json={"instances": [rows[i] for i in accepted]}, timeout=30).json()
        if suffix == ".csv":
            refused = httpx.post(url, json={"instances": [rows[50]]}, timeout=30)
            assert refused.status_code == 400 and "'tenure'" in refused.json()["error"]
    finally:
        predictor.stop()
    assert summary["rejected"] == (1 if suffix == ".csv" else 0) and summary["unseen"] == {"plan": 1}
    assert out.index.tolist() == accepted
    served = pd.DataFrame(answer["predictions"], columns=["probability_0", "probability_1"], index=accepted)
    pd.testing.assert_frame_equal(
        out[["probability_0", "probability_1"]].astype("float64"), served, check_names=False, check_exact=True
    )

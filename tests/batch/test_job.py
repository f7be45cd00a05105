"""Batch jobs on real registered models and real files: predictions, rejects, captures, drift, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfloop.batch.job import BatchOptions, check_input, resolve_model, run_batch
from kfloop.errors import ConfigError, DataError, ModelNotFound, RegistryError
from kfloop.monitoring.capture import read_captures
from kfloop.monitoring.feedback import FeedbackStore, labeled_frame
from kfloop.store.objects import open_store
from tests.fakes.bundles import churn_frame


def _input(tmp_path, n=500, seed=3, name="in.csv", **changes) -> tuple[pd.DataFrame, str]:
    frame = churn_frame(n, seed=seed)
    for column, values in changes.items():
        frame[column] = values
    path = tmp_path / name
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path, index=False)
    return frame, str(path)


def _quiet(_line: str) -> None:
    pass


def test_every_row_is_predicted_once_with_its_row_number_and_capture_id(churn_model, tmp_path):
    settings, ref, schema = churn_model
    frame, path = _input(tmp_path, n=1000)
    lines: list[str] = []
    summary = run_batch(BatchOptions(ref, path, str(tmp_path / "out.parquet"), chunk_rows=300), settings, lines.append)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["rows"] == summary["predicted"] == 1000 and summary["rejected"] == 0 and summary["chunks"] == 4
    assert [line.split(":")[0] for line in lines] == ["chunk 0", "chunk 1", "chunk 2", "chunk 3"]
    assert out["row"].tolist() == list(range(1000))
    assert out["request_id"].tolist() == [f"{summary['batch_id']}:{i}" for i in range(1000)]
    assert set(out["prediction"]) <= {"0", "1"}
    assert np.allclose(out["probability_0"] + out["probability_1"], 1, atol=1e-6)
    assert pd.read_csv(tmp_path / "out.rejects.csv").empty  # written, with its header, even when empty
    records = read_captures(open_store(settings), "churn", "1")
    assert sorted(r["request_id"] for r in records) == sorted(out["request_id"])
    first = next(r for r in records if r["request_id"].endswith(":0"))
    assert first["revision"] == "batch" and first["model_version"] == "1"
    assert first["features"] == {"tenure": int(frame.tenure[0]), "charges": frame.charges[0], "plan": frame.plan[0]}
    assert first["prediction"] == pytest.approx([out.probability_0[0], out.probability_1[0]], abs=0)


def test_feedback_labels_join_batch_captures_like_served_ones(churn_model, tmp_path):
    settings, ref, schema = churn_model
    frame, path = _input(tmp_path, n=50)
    run_batch(BatchOptions(ref, path, str(tmp_path / "out.csv")), settings, _quiet)
    out = pd.read_csv(tmp_path / "out.csv")
    store = open_store(settings)
    labels = [{"request_id": rid, "label": int(y)} for rid, y in zip(out.request_id, frame.churned)]
    assert FeedbackStore(store).add("churn", schema, labels) == {"accepted": 50}
    joined = labeled_frame(store, "churn", schema)
    assert len(joined) == 50 and set(joined["revision"]) == {"batch"}


def test_the_id_column_is_carried_and_parquet_input_is_read_in_chunks(churn_model, tmp_path):
    settings, ref, _ = churn_model
    ids = [f"customer-{i}" for i in range(700)]
    _, path = _input(tmp_path, n=700, name="in.parquet", customer=ids)
    summary = run_batch(
        BatchOptions(ref, path, str(tmp_path / "out.csv"), id_column="customer", chunk_rows=256), settings, _quiet
    )
    out = pd.read_csv(tmp_path / "out.csv")
    assert summary["chunks"] == 3 and out["customer"].tolist() == ids and "row" not in out


def test_bad_rows_go_to_the_rejects_file_with_their_reason_and_are_counted(churn_model, tmp_path):
    settings, ref, _ = churn_model
    tenure = churn_frame(400, seed=3)["tenure"].astype(object)
    tenure[[17, 250]] = ["about ten", "n/a years"]
    plan = churn_frame(400, seed=3)["plan"].astype(object)
    plan[40] = "platinum"  # unseen: predicted as missing and counted, as online
    _, path = _input(tmp_path, n=400, tenure=tenure, plan=plan)
    summary = run_batch(BatchOptions(ref, path, str(tmp_path / "out.parquet"), chunk_rows=200), settings, _quiet)
    assert (summary["rows"], summary["predicted"], summary["rejected"]) == (400, 398, 2)
    assert summary["unseen"] == {"plan": 1}
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert rejects["row"].tolist() == [17, 250]
    assert rejects["reason"][0] == "feature 'tenure': expected a number or null; got 'about ten'"
    assert rejects["tenure"].tolist() == ["about ten", "n/a years"]
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert 17 not in set(out.row) and 250 not in set(out.row) and len(out) == 398
    records = read_captures(open_store(settings), "churn")
    by_row = {int(r["request_id"].split(":")[1]): r for r in records}
    assert len(records) == 398 and 17 not in by_row  # the chunk with rejects still captures numbers, not text
    assert by_row[18]["features"]["tenure"] == int(churn_frame(400, seed=3)["tenure"][18])
    unseen = [r for r in records if r["unseen"]]
    assert [(r["request_id"].split(":")[1], r["unseen"]) for r in unseen] == [("40", {"plan": "platinum"})]


def test_drift_is_checked_per_chunk(churn_model, tmp_path):
    settings, ref, _ = churn_model
    frame = churn_frame(900, seed=4)
    frame.loc[600:, "tenure"] = frame.loc[600:, "tenure"] + 60  # the last chunk drifts
    path = tmp_path / "drifted.csv"
    frame.to_csv(path, index=False)
    lines: list[str] = []
    summary = run_batch(BatchOptions(ref, str(path), str(tmp_path / "o.csv"), chunk_rows=300), settings, lines.append)
    assert [c["is_drift"] for c in summary["drift"]["per_chunk"]] == [False, False, True]
    assert summary["drift"]["chunks_drifted"] == 1 and "DRIFT" in lines[2] and "tenure" in lines[2]


def test_an_input_without_feature_columns_names_them_before_anything_is_written(churn_model, tmp_path):
    settings, ref, schema = churn_model
    _, path = _input(tmp_path, n=50)
    pd.read_csv(path).drop(columns=["plan", "charges"]).rename(columns={"tenure": "Tenure"}).to_csv(path, index=False)
    options = BatchOptions(ref, path, str(tmp_path / "out.csv"))
    with pytest.raises(DataError, match=r"lacks the feature columns \['tenure', 'charges', 'plan'\]"):
        check_input(options, settings, schema)
    with pytest.raises(DataError, match="lacks the feature columns"):
        run_batch(options, settings, _quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "home", "in.csv"]
    assert read_captures(open_store(settings), "churn") == []


def test_a_failure_in_a_later_chunk_leaves_no_output_no_rejects_and_no_captures(churn_model, tmp_path):
    settings, ref, _ = churn_model
    _, path = _input(tmp_path, n=600)
    with open(path, "a") as f:
        f.write("1,2,basic,0,surplus,fields\n")  # a malformed line in the last chunk
    with pytest.raises(DataError, match="cannot read .*in.csv as csv"):
        run_batch(BatchOptions(ref, path, str(tmp_path / "out.csv"), chunk_rows=200), settings, _quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "home", "in.csv"]  # no temporary files either
    assert read_captures(open_store(settings), "churn") == []


def test_a_capture_that_fails_on_its_thread_fails_the_job_and_leaves_nothing(churn_model, tmp_path, monkeypatch):
    import kfloop.batch.job as job

    settings, ref, _ = churn_model
    _, path = _input(tmp_path, n=600)
    encode, calls = job.encode_parquet_table, []

    def encode_then_fail(*args, **kwargs):  # the capture of the second chunk fails (a full disk, say)
        calls.append(1)
        if len(calls) == 2:
            raise OSError("no space left on device")
        return encode(*args, **kwargs)

    monkeypatch.setattr(job, "encode_parquet_table", encode_then_fail)
    with pytest.raises(OSError, match="no space left"):
        run_batch(BatchOptions(ref, path, str(tmp_path / "out.csv"), chunk_rows=100), settings, _quiet)
    assert len(calls) == 2  # nothing encoded after the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "home", "in.csv"]
    assert read_captures(open_store(settings), "churn") == []


def test_unknown_models_versions_and_stages_are_refused(churn_model):
    settings, _, _ = churn_model
    with pytest.raises(ModelNotFound, match="no version 7"):
        resolve_model(settings, "churn:7")
    with pytest.raises(ModelNotFound, match="no version in stage 'production'"):
        resolve_model(settings, "churn@production")
    with pytest.raises(ModelNotFound, match="'fraud' has no registered versions"):
        resolve_model(settings, "fraud")
    with pytest.raises(RegistryError, match="not valid"):
        resolve_model(settings, "../etc")
    assert resolve_model(settings, "churn@staging").ref == "churn:1"


def test_bad_options_are_refused(churn_model, tmp_path):
    settings, ref, _ = churn_model
    _, path = _input(tmp_path, n=10)
    with pytest.raises(ConfigError, match="three different locations"):
        run_batch(BatchOptions(ref, path, path), settings, _quiet)
    with pytest.raises(ConfigError, match="chunk_rows=0"):
        run_batch(BatchOptions(ref, path, str(tmp_path / "o.csv"), chunk_rows=0), settings, _quiet)
    with pytest.raises(ConfigError, match="unsupported file type '.txt'"):
        run_batch(BatchOptions(ref, path, str(tmp_path / "o.txt")), settings, _quiet)
    with pytest.raises(ConfigError, match="output folder .* does not exist"):
        run_batch(BatchOptions(ref, path, str(tmp_path / "nowhere" / "o.csv")), settings, _quiet)


def test_input_and_output_on_s3(s3_settings, tmp_path):
    from tests.batch.conftest import register_churn

    ref, _ = register_churn(s3_settings, tmp_path / "bundle")
    frame = churn_frame(300, seed=5)
    store = open_store(s3_settings)
    frame.to_csv(tmp_path / "in.csv", index=False)
    store.put_file("inputs/in.csv", tmp_path / "in.csv")
    bucket = s3_settings.s3_bucket
    summary = run_batch(
        BatchOptions(ref, f"s3://{bucket}/inputs/in.csv", f"s3://{bucket}/outputs/out.parquet", chunk_rows=100),
        s3_settings,
        _quiet,
    )
    assert summary["predicted"] == 300 and summary["output"] == f"s3://{bucket}/outputs/out.parquet"
    store.get_file("outputs/out.parquet", tmp_path / "out.parquet")
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 300
    assert store.exists("outputs/out.rejects.csv") and len(read_captures(store, "churn")) == 300


def test_a_chunk_predicted_in_slices_side_by_side_equals_one_prediction_of_its_rows(churn_model, tmp_path):
    from kfloop.batch.job import MIN_SLICE_ROWS, _row_slices
    from kfloop.store import bundle
    from kfloop.store.registry import Registry
    from kfloop.training.booster import load_model, predict

    assert _row_slices(10, 4) == [slice(0, 10)]  # few rows: one call
    slices = _row_slices(4 * MIN_SLICE_ROWS + 3, 4)
    assert len(slices) == 4 and slices[0].start == 0 and slices[-1].stop == 4 * MIN_SLICE_ROWS + 3
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    settings, ref, schema = churn_model
    n = 3 * MIN_SLICE_ROWS + 17  # one chunk of several slices
    frame, path = _input(tmp_path, n=n, name="in.parquet")
    summary = run_batch(BatchOptions(ref, path, str(tmp_path / "out.parquet"), chunk_rows=n), settings, _quiet)
    assert summary["chunks"] == 1 and summary["predicted"] == n
    out = pd.read_parquet(tmp_path / "out.parquet")
    _, model_dir = Registry(open_store(settings)).fetch_bundle(ref, tmp_path / "fetched")
    expected = predict(load_model(model_dir / bundle.MODEL_FILE), schema, schema.encode_frame(frame))
    assert np.array_equal(out[["probability_0", "probability_1"]].to_numpy(), expected.astype(np.float32))

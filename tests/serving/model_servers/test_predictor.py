"""The predictor as a real KServe ModelServer process on 127.0.0.1, called over HTTP with httpx
(the bodies curl would send) and with KServe's own REST and gRPC clients, V1 and V2."""

from __future__ import annotations

import asyncio
import math
import time

import grpc
import httpx
import numpy as np
import orjson
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from prometheus_client.parser import text_string_to_metric_families

from kfloop.config import Settings
from kfloop.errors import ChecksumError, ConfigError
from kfloop.serving.model_servers.predictor import XGBoostPredictor
from kfloop.serving.model_servers.startup import resolve_model, resolve_model_dir
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.fakes.bundles import build_bundle, churn_frame
from tests.serving.conftest import PredictorProcess, start_predictors

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

MAX_BATCH = 50
MAX_BODY = 64 * 1024


CHURN_FLAGS = ("--max_batch_size", str(MAX_BATCH), "--max_body_bytes", str(MAX_BODY), "--model_version", "7")


@pytest.fixture(scope="module")
def servers(churn_bundle, numeric_bundle):
    """The churn predictor (small batch and body limits) and an all-numeric one, versions 7 and 3; and
    the churn predictor again with request logging, which serves every request on KServe's own path."""
    started = start_predictors(
        PredictorProcess(churn_bundle[0], "churn", *CHURN_FLAGS, grpc=True),
        PredictorProcess(numeric_bundle[0], "numeric", "--model_version", "3"),
        PredictorProcess(churn_bundle[0], "churn", *CHURN_FLAGS, "--request_logging", "true"),
    )
    try:
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def churn(servers):
    return servers[0]


@pytest.fixture(scope="module")
def numeric(servers):
    return servers[1]


@pytest.fixture(scope="module")
def kserve_path(servers):
    return servers[2]


@pytest.fixture(scope="module")
def rows():
    """Twenty fresh rows (with some missing charges) and their expected probabilities, computed in-process."""
    return churn_frame(n=20, seed=1)


def expected(bundle, df) -> np.ndarray:
    _, schema, booster = bundle
    p = booster.inplace_predict(schema.encode_frame(df))
    return np.column_stack([1 - p, p])


def as_lists(df) -> list[list]:
    return [[int(t), None if math.isnan(c) else float(c), p] for t, c, p in zip(df.tenure, df.charges, df.plan)]


def as_objects(df) -> list[dict]:
    return [dict(zip(["tenure", "charges", "plan"], row)) for row in as_lists(df)]


def predict_v1(server, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{server.model_name}:predict", json=body, timeout=10, **kwargs)


def error_of(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def unseen_count(server, feature: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kfloop_predictor_unseen_categories_total" and sample.labels == {
                "model_name": server.model_name,
                "feature": feature,
            }:
                return sample.value
    return 0.0


def kserve_infer(server, data, protocol: str):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol=protocol, retries=0, timeout=10))
        try:
            return await client.infer(server.url, data, model_name=server.model_name)
        finally:
            await client.close()

    return asyncio.run(call())


# -- good requests -------------------------------------------------------------------------------


def test_v1_list_instances_match_inplace_predict(churn, churn_bundle, rows):
    response = predict_v1(churn, {"instances": as_lists(rows)})
    assert response.status_code == 200, response.text
    assert response.headers["x-kfloop-model-version"] == "7"
    got = np.array(response.json()["predictions"], dtype=np.float32)
    np.testing.assert_allclose(got, expected(churn_bundle, rows), rtol=1e-6)


def test_v1_object_instances_with_kserve_client(churn, churn_bundle, rows):
    result = kserve_infer(churn, {"instances": as_objects(rows)}, "v1")
    np.testing.assert_allclose(np.array(result["predictions"], np.float32), expected(churn_bundle, rows), rtol=1e-6)


def test_v2_named_inputs_bytes_over_json(churn, churn_bundle, rows):
    n = len(rows)
    body = {
        "inputs": [
            {"name": "tenure", "shape": [n], "datatype": "INT64", "data": rows.tenure.tolist()},
            {"name": "charges", "shape": [n, 1], "datatype": "FP64", "data": [[r[1]] for r in as_lists(rows)]},
            {"name": "plan", "shape": [n], "datatype": "BYTES", "data": rows.plan.tolist()},
        ]
    }
    response = httpx.post(f"{churn.url}/v2/models/churn/infer", json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["model_version"] == "7" and response.headers["x-kfloop-model-version"] == "7"
    [out] = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("predictions", "FP32", [n, 2])
    got = np.array(out["data"], np.float32).reshape(n, 2)
    np.testing.assert_allclose(got, expected(churn_bundle, rows), rtol=1e-6)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_named_inputs_with_kserve_client(churn, churn_bundle, rows, binary):
    result = kserve_infer(churn, InferRequest("churn", churn_inputs(rows, binary)), "v2")
    np.testing.assert_allclose(result.outputs[0].as_numpy(), expected(churn_bundle, rows), rtol=1e-6)


def churn_inputs(rows, binary: bool) -> list[InferInput]:
    n = len(rows)
    inputs = [InferInput("tenure", [n], "INT64"), InferInput("charges", [n], "FP32"), InferInput("plan", [n], "BYTES")]
    inputs[0].set_data_from_numpy(rows.tenure.to_numpy(np.int64), binary_data=binary)
    inputs[1].set_data_from_numpy(rows.charges.to_numpy(np.float32), binary_data=binary)
    inputs[2].set_data_from_numpy(rows.plan.to_numpy(object), binary_data=binary)
    return inputs


@pytest.mark.parametrize("binary", [False, True], ids=["contents", "raw"])
def test_v2_over_grpc_with_kserve_client(churn, churn_bundle, rows, binary):
    async def call(inputs):
        client = InferenceGRPCClient(f"127.0.0.1:{churn.grpc_port}", retries=0, timeout=10)
        try:
            return await client.infer(InferRequest("churn", inputs))
        finally:
            await client.close()

    result = asyncio.run(call(churn_inputs(rows, binary)))
    np.testing.assert_allclose(result.outputs[0].as_numpy(), expected(churn_bundle, rows), rtol=1e-6)
    assert result.model_version == "7"
    with pytest.raises(grpc.RpcError, match="'plan'"):
        asyncio.run(call(churn_inputs(rows, binary)[:2]))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_single_tensor_on_all_numeric_model(numeric, numeric_bundle, rows, binary):
    _, schema, booster = numeric_bundle
    X = schema.encode_frame(rows)
    tensor = InferInput("input-0", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary)
    result = kserve_infer(numeric, InferRequest("numeric", [tensor]), "v2")
    p = booster.inplace_predict(X)
    np.testing.assert_allclose(result.outputs[0].as_numpy(), np.column_stack([1 - p, p]), rtol=1e-6)


def test_v2_metadata_names_inputs_outputs_and_version(churn, numeric):
    doc = httpx.get(f"{churn.url}/v2/models/churn").json()
    assert doc["name"] == "churn" and doc["versions"] == ["7"]
    assert [(i["name"], i["datatype"]) for i in doc["inputs"]] == [
        ("tenure", "FP32"),
        ("charges", "FP32"),
        ("plan", "BYTES"),
    ]
    assert doc["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1, 2]}]
    assert httpx.get(f"{numeric.url}/v2/models/numeric").json()["versions"] == ["3"]


def test_concurrent_requests_each_get_their_own_rows(churn, churn_bundle):
    """Micro-batching coalesces concurrent requests; every answer must still be its own rows'."""
    frames = [churn_frame(n=1 + i % 7, seed=100 + i) for i in range(40)]

    async def send_all():
        async with httpx.AsyncClient(timeout=20) as client:
            url = f"{churn.url}/v1/models/churn:predict"
            return await asyncio.gather(*(client.post(url, json={"instances": as_lists(f)}) for f in frames))

    for frame, response in zip(frames, asyncio.run(send_all())):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(
            np.array(response.json()["predictions"], np.float32), expected(churn_bundle, frame), rtol=1e-6
        )


def test_missing_values_are_allowed(churn, churn_bundle):
    """JSON has no NaN: null is missing (the string "NaN" is refused: see the value rule)."""
    lists = predict_v1(churn, {"instances": [[5, None, "pro"], [5, None, None], [None, 80.0, "team"]]})
    objects = predict_v1(churn, {"instances": [{"tenure": None, "charges": 80.0, "plan": "team"}]})
    assert lists.status_code == 200 and objects.status_code == 200, (lists.text, objects.text)
    df = churn_frame(n=3).assign(tenure=[5.0, 5.0, np.nan], charges=[np.nan, np.nan, 80.0], plan=["pro", None, "team"])
    want = expected(churn_bundle, df)
    np.testing.assert_allclose(np.array(lists.json()["predictions"], np.float32), want, rtol=1e-6)
    np.testing.assert_allclose(np.array(objects.json()["predictions"], np.float32), want[2:], rtol=1e-6)


def test_unseen_category_is_served_as_missing_and_counted(churn, churn_bundle):
    before = unseen_count(churn, "plan")
    response = predict_v1(churn, {"instances": [[12, 60.0, "enterprise"], [12, 60.0, "platinum"], [12, 60.0, "pro"]]})
    assert response.status_code == 200, response.text
    df = churn_frame(n=3).assign(tenure=12, charges=60.0, plan=[None, None, "pro"])
    np.testing.assert_allclose(
        np.array(response.json()["predictions"], np.float32), expected(churn_bundle, df), rtol=1e-6
    )
    assert unseen_count(churn, "plan") == before + 2


# -- the fast path and KServe's path ----------------------------------------------------------------


def v2_named(n: int = 2, **extra) -> dict:
    return {
        **extra,
        "inputs": [
            {"name": "tenure", "shape": [n], "datatype": "INT64", "data": [5] * n},
            {"name": "charges", "shape": [n, 1], "datatype": "FP64", "data": [[70.5]] * n},
            {"name": "plan", "shape": [n], "datatype": "BYTES", "data": ["pro"] * n},
        ],
    }


SAME_ANSWERS = [  # (what, path, body): answered alike by both paths
    ("v1 lists", "v1", {"instances": [[5, 70.5, "pro"], [9, None, "enterprise"]]}),
    ("v1 objects", "v1", {"instances": [{"tenure": 5, "charges": None, "plan": None}]}),
    ("v1 NaN string", "v1", {"instances": [{"tenure": 5, "charges": "NaN", "plan": None}]}),
    ("v1 boolean", "v1", {"instances": [[True, 70.5, "pro"]]}),
    ("v1 1e39", "v1", {"instances": [[5, 1e39, "pro"]]}),
    ("v1 2**64", "v1", b'{"instances": [[18446744073709551616, 1.0, "pro"]]}'),
    ("v2 named inputs", "v2", v2_named(id="req-7")),
    ("v2 named inputs, no id", "v2", v2_named(3)),
    ("v2 requested outputs", "v2", v2_named(1, id="o", outputs=[{"name": "predictions"}])),
    ("malformed JSON", "v1", b'{"instances": [[1,'),
    ("no instances", "v1", {"rows": []}),
    ("wrong number of features", "v1", {"instances": [[5, 70.5]]}),
    ("unknown feature", "v1", {"instances": [{"tenure": 5, "charges": 1.0, "plan": "pro", "colour": "red"}]}),
    ("string for a number", "v1", {"instances": [[5, "lots", "pro"]]}),
    ("empty instances", "v1", {"instances": []}),
    ("over the row limit", "v1", {"instances": [[5, 70.5, "pro"]] * (MAX_BATCH + 1)}),
    ("v2 wrong datatype", "v2", {"inputs": [{**i, "datatype": "FP32"} for i in v2_named(1)["inputs"]]}),
    ("v2 missing input", "v2", {"inputs": v2_named(1)["inputs"][:2]}),
    ("v2 id over 256 bytes", "v2", v2_named(1, id="i" * 8200)),
]


def test_a_request_id_over_256_bytes_is_a_400_on_both_paths(churn, kserve_path):
    for server in (churn, kserve_path):
        for protocol, body in (("v1", {"instances": [[5, 70.5, "pro"]]}), ("v2", v2_named(1))):
            path = "/v1/models/churn:predict" if protocol == "v1" else "/v2/models/churn/infer"
            headers = {"content-type": "application/json", "x-request-id": "r" * 8200}
            answer = httpx.post(server.url + path, content=orjson.dumps(body), headers=headers, timeout=10)
            assert answer.status_code == 400, answer.text
            assert "x-request-id is 8200 bytes long: the limit is 256 bytes" in answer.json()["error"]
        ok = httpx.post(
            server.url + "/v1/models/churn:predict",
            json={"instances": [[5, 70.5, "pro"]]},
            headers={"x-request-id": "r" * 256},
            timeout=10,
        )
        assert ok.status_code == 200


def post(server, protocol: str, body) -> httpx.Response:
    path = f"/v1/models/{server.model_name}:predict" if protocol == "v1" else f"/v2/models/{server.model_name}/infer"
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(server.url + path, content=content, headers={"content-type": "application/json"}, timeout=10)


@pytest.mark.parametrize("what, protocol, body", SAME_ANSWERS, ids=[c[0] for c in SAME_ANSWERS])
def test_the_fast_path_answers_as_kserve_path_does(churn, kserve_path, what, protocol, body):
    fast, kserve = post(churn, protocol, body), post(kserve_path, protocol, body)
    assert fast.status_code == kserve.status_code, (fast.text, kserve.text)
    fast_doc, kserve_doc = fast.json(), kserve.json()
    if fast.status_code == 200 and protocol == "v2" and "id" not in body:  # each made up an id
        assert fast_doc.pop("id") != kserve_doc.pop("id")
    assert fast_doc == kserve_doc
    assert fast.headers.get("x-kfloop-model-version") == kserve.headers.get("x-kfloop-model-version")
    assert fast.headers["content-type"] == kserve.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"inputs": 3}, '"inputs" must be a list; got int'),
        ({"inputs": [{"name": "tenure", "shape": [1], "datatype": "INT64"}]}, "inputs[0] has no data"),
        ({"id": 5, "inputs": []}, '"id" must be a string'),
        ([1, 2], 'a JSON object with an "inputs" list; got a list'),
    ],
)
def test_v2_requests_that_do_not_fit_the_protocol_are_400_naming_the_field(churn, kserve_path, body, message):
    """Where KServe's path would answer pydantic's 422 (``{"detail"}``), both paths answer a 400 with
    ``{"error"}``, as for every other malformed request; the fast path's message names the field."""
    assert message in error_of(post(churn, "v2", body))
    kserve = post(kserve_path, "v2", body)
    assert kserve.status_code == 400 and set(kserve.json()) == {"error"}


def test_request_logging_logs_every_request(kserve_path):
    before = kserve_path.output().count("kserve.io.v1.models.churn:predict")
    assert post(kserve_path, "v1", SAME_ANSWERS[0][2]).status_code == 200
    time.sleep(0.2)
    assert kserve_path.output().count("kserve.io.v1.models.churn:predict") > before  # KServe's latency lines


# -- bad requests ----------------------------------------------------------------------------------


def test_malformed_json(churn):
    response = httpx.post(
        f"{churn.url}/v1/models/churn:predict",
        content=b'{"instances": [[1, 2,',
        headers={"content-type": "application/json"},
    )
    assert "Unrecognized request format" in error_of(response)


def test_body_not_sent_as_json(churn):  # curl -d without a content-type
    response = httpx.post(
        f"{churn.url}/v1/models/churn:predict",
        content=b'{"instances": [[1, 2.0, "pro"]]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "content-type: application/json" in error_of(response)


def test_body_without_instances(churn):
    assert '"instances"' in error_of(predict_v1(churn, {"rows": [[1, 2, "pro"]]}))


def test_wrong_number_of_features(churn):
    message = error_of(predict_v1(churn, {"instances": [[1, 2.0, "pro"], [1, 2.0]]}))
    assert "instance 1 has 2 values" in message and "expected 3" in message


def test_unknown_feature_name(churn):
    message = error_of(
        predict_v1(churn, {"instances": [{"tenure": 1, "charges": 2.0, "plan": "pro", "colour": "red"}]})
    )
    assert "unknown feature names ['colour']" in message


def test_missing_feature(churn):
    message = error_of(predict_v1(churn, {"instances": [{"tenure": 1, "plan": "pro"}]}))
    assert "missing features ['charges']" in message


def test_string_where_a_number_belongs(churn):
    message = error_of(predict_v1(churn, {"instances": [[1, 2.0, "pro"], [3, "lots", "pro"]]}))
    assert "'charges'" in message and "'lots'" in message and "row 1" in message


def test_empty_instances(churn):
    assert "empty" in error_of(predict_v1(churn, {"instances": []}))


def test_batch_over_the_row_limit(churn):
    message = error_of(predict_v1(churn, {"instances": [[1, 2.0, "pro"]] * (MAX_BATCH + 1)}))
    assert f"{MAX_BATCH + 1} rows" in message and f"limit of {MAX_BATCH}" in message


def test_body_over_the_size_limit(churn):
    body = orjson.dumps({"instances": [[1, 2.0, "x" * 1000]] * 80})
    assert len(body) > MAX_BODY
    response = httpx.post(
        f"{churn.url}/v1/models/churn:predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and str(MAX_BODY) in response.json()["error"]


def test_chunked_body_over_the_size_limit(churn):
    def chunks():
        yield b'{"instances": ['
        for _ in range(100):
            yield orjson.dumps([1, 2.0, "x" * 1000]) + b","
        yield b'[1, 2.0, "pro"]]}'

    response = httpx.post(
        f"{churn.url}/v1/models/churn:predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_chunked_body_under_the_limit_is_served(churn):
    body = orjson.dumps({"instances": [[1, 2.0, "pro"]]})
    response = httpx.post(
        f"{churn.url}/v1/models/churn:predict",
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_unknown_model_is_404(churn):
    response = httpx.post(f"{churn.url}/v1/models/nope:predict", json={"instances": [[1, 2.0, "pro"]]})
    assert response.status_code == 404
    assert httpx.get(f"{churn.url}/v2/models/nope").status_code == 404


def test_v2_wrong_datatype(churn):
    body = {
        "inputs": [
            {"name": "tenure", "shape": [1], "datatype": "FP32", "data": [1]},
            {"name": "charges", "shape": [1], "datatype": "FP32", "data": [2.0]},
            {"name": "plan", "shape": [1], "datatype": "FP32", "data": [1.0]},
        ]
    }
    message = error_of(httpx.post(f"{churn.url}/v2/models/churn/infer", json=body))
    assert "'plan'" in message and "BYTES" in message


def test_v2_wrong_shape(churn):
    body = {
        "inputs": [
            {"name": "tenure", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "charges", "shape": [1], "datatype": "FP32", "data": [2.0]},
            {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["pro", "team"]},
        ]
    }
    assert "'charges' has shape [1]" in error_of(httpx.post(f"{churn.url}/v2/models/churn/infer", json=body))


def test_v2_single_tensor_refused_with_categorical_features(churn):
    body = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 0]}]}
    message = error_of(httpx.post(f"{churn.url}/v2/models/churn/infer", json=body))
    assert "categorical features ['plan']" in message


def test_kserve_client_sees_400_as_http_error(churn):
    with pytest.raises(httpx.HTTPStatusError, match="400"):
        kserve_infer(churn, {"instances": [[1, 2.0]]}, "v1")


def test_server_still_answers_after_bad_requests(churn, churn_bundle, rows):
    """Runs last in this module: every bad request above left the server able to serve."""
    response = predict_v1(churn, {"instances": as_lists(rows)})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        np.array(response.json()["predictions"], np.float32), expected(churn_bundle, rows), rtol=1e-6
    )


# -- in-process: loading and resolving the model folder --------------------------------------------


def test_load_refuses_a_tampered_bundle(tmp_path):
    bundle, _, _ = build_bundle(tmp_path / "b", churn_frame(n=60), "churned")
    (bundle / "schema.json").write_text((bundle / "schema.json").read_text().replace("tenure", "tenure2"))
    with pytest.raises(ChecksumError, match="schema.json"):
        XGBoostPredictor("churn", bundle).load()


def test_resolve_model_dir_accepts_folders_and_file_urls(churn_bundle, tmp_path):
    folder = churn_bundle[0]
    assert resolve_model_dir(str(folder)) == folder
    assert resolve_model_dir(folder.as_uri()) == folder
    with pytest.raises(ConfigError, match="not a folder"):
        resolve_model_dir(str(tmp_path / "absent"))


def test_resolve_model_fetches_a_registry_reference(churn_bundle, tmp_path):
    settings = Settings(home=tmp_path / "home")
    Registry(LocalStore(settings.home)).register("churn", churn_bundle[0])
    path, version = resolve_model("churn:latest", settings)
    assert version == "1" and path.is_relative_to(settings.home)
    model = XGBoostPredictor("churn", path, version)
    assert model.load() and model.version == "1"


@pytest.mark.parametrize(
    "datatype, value, message",
    [
        ("INT64", 42.7, "feature 'tenure' at row 0: not an integer, as datatype INT64 needs"),
        ("UINT8", -5, "feature 'tenure' at row 0: out of the range of datatype UINT8"),
        ("FP64", 1e39, "feature 'tenure' at row 0: out of range"),
    ],
)
def test_a_v2_value_that_does_not_fit_its_datatype_is_a_400_on_both_paths(churn, kserve_path, datatype, value, message):
    body = v2_named(1)
    body["inputs"][0].update(datatype=datatype, data=[value])
    for server in (churn, kserve_path):
        answer = post(server, "v2", body)
        assert answer.status_code == 400, answer.text
        assert message in answer.json()["error"], server.url


def binary_body(plan_bytes: bytes | None = None, **changes) -> tuple[bytes, int]:
    """A V2 binary body for one churn row: tenure INT64, charges FP32, plan BYTES (length-prefixed)."""
    plan = plan_bytes if plan_bytes is not None else (3).to_bytes(4, "little") + b"pro"
    blobs = [np.int64(5).tobytes(), np.float32(70.5).tobytes(), plan]
    header = {
        "inputs": [
            {"name": n, "shape": [1], "datatype": d, "parameters": {"binary_data_size": len(b)}}
            for n, d, b in zip(("tenure", "charges", "plan"), ("INT64", "FP32", "BYTES"), blobs)
        ]
    }
    for i, params in changes.get("sizes", {}).items():
        header["inputs"][i]["parameters"]["binary_data_size"] = params
    text = orjson.dumps(header)
    return text + b"".join(blobs), len(text)


BAD_BINARY = {
    "BYTES length prefix 1e9": (
        *binary_body((10**9).to_bytes(4, "little") + b"pro"),
        "length prefix 1000000000 runs past",
    ),
    "binary_data_size too big": (*binary_body(sizes={0: 9}), "binary_data_size 9 does not fit shape [1] of INT64"),
    "binary_data_size past the body": (*binary_body(sizes={2: 99}), "binary_data_size 99 runs past the body"),
    "binary_data_size not a number": (*binary_body(sizes={1: "four"}), "binary_data_size 'four' is not a byte count"),
    "bytes left over": (binary_body()[0] + b"xx", binary_body()[1], "2 bytes after its inputs"),
}


@pytest.mark.parametrize("what", list(BAD_BINARY) + ["non-numeric header", "header past the body"])
def test_a_malformed_v2_binary_body_is_a_400_on_both_paths(churn, kserve_path, what):
    if what in BAD_BINARY:
        body, length, message = BAD_BINARY[what]
    else:
        body, _ = binary_body()
        length, message = ("abc", "'abc' is not a byte count") if what.startswith("non") else (10**6, "is more than")
    for server in (churn, kserve_path):
        answer = httpx.post(
            f"{server.url}/v2/models/churn/infer",
            content=body,
            headers={"content-type": "application/octet-stream", "inference-header-content-length": str(length)},
            timeout=10,
        )
        assert answer.status_code == 400, answer.text
        assert message in answer.json()["error"]
    good, length = binary_body()
    ok = httpx.post(
        f"{churn.url}/v2/models/churn/infer",
        content=good,
        headers={"content-type": "application/octet-stream", "inference-header-content-length": str(length)},
        timeout=10,
    )
    assert ok.status_code == 200, ok.text

"""The Open Inference Protocol as real clients speak it, against real servers on 127.0.0.1: a predictor,
the same with ``--request_logging`` (KServe's own request path), and drift transformers in front of
it forwarding V1 and V2 (one of them with ``--request_logging``).

Every JSON answer these tests get is validated against the OIP REST OpenAPI
(``../shared/schemas/open-inference-protocol/open_inference_rest.yaml``; those checks skip where it is absent),
and the servers are driven with
tritonclient's HTTP client (JSON and binary modes), KServe's ``InferenceRESTClient`` and, on a
predictor started with ``--enable_grpc true``, tritonclient's gRPC client.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import socket
import subprocess
import sys
import uuid
import zlib

import httpx
import jsonschema
import numpy as np
import orjson
import pytest
import yaml
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.conftest import free_port
from tests.fakes.bundles import churn_frame, servable_bundle
from tests.fakes.manifests import SCHEMAS
from tests.fakes.oip_clients import tritonclient_infer
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.processes  # starts servers on 127.0.0.1

MODEL, VERSION = "churn", "3"
SPEC_PATH = SCHEMAS / "open-inference-protocol" / "open_inference_rest.yaml"


@functools.cache
def spec() -> dict:
    """The OIP REST OpenAPI from ../shared (the test skips without it: it is not copied into the project)."""
    if not SPEC_PATH.is_file():
        pytest.skip(f"the Open Inference Protocol OpenAPI is not at {SPEC_PATH}")
    return yaml.safe_load(SPEC_PATH.read_text())


SERVERS = ("predictor", "predictor_logged", "v1_transformer", "v2_transformer", "v2_transformer_logged")


# -- servers -------------------------------------------------------------------------------------------


class Server(ServerProcess):
    def __init__(self, module: str, *args: str, env: dict | None = None):
        port = free_port()
        super().__init__(
            f"kfloop.serving.model_servers.{module}",
            ["--model_name", MODEL, "--http_host", "127.0.0.1", "--http_port", str(port), *args],
            port,
            f"/v2/models/{MODEL}/ready",
            env,
        )


@pytest.fixture(scope="module")
def frame():
    return churn_frame(400, seed=4)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, frame):
    root = tmp_path_factory.mktemp("protocol")
    bundle = str(servable_bundle(root, frame, "churned"))
    env = {"KFLOOP_HOME": str(root / "home")}
    flags = ("--model_dir", bundle, "--model_version", VERSION)
    grpc_port = free_port()
    predictor = Server("predictor", *flags, "--grpc_port", str(grpc_port))
    predictor.grpc_port = grpc_port
    logged = Server("predictor", *flags, "--request_logging", "true")
    procs = {"predictor": predictor, "predictor_logged": logged}
    try:
        predictor.wait_ready()
        host = f"127.0.0.1:{predictor.port}"
        transformer = ("--predictor_host", host, "--capture_flush_seconds", "0.2", "--shutdown_seconds", "2")
        procs["v1_transformer"] = Server("transformer", *flags, *transformer, "--predictor_protocol", "v1", env=env)
        procs["v2_transformer"] = Server("transformer", *flags, *transformer, "--predictor_protocol", "v2", env=env)
        procs["v2_transformer_logged"] = Server(
            "transformer", *flags, *transformer, "--predictor_protocol", "v2", "--request_logging", "true", env=env
        )
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.stop()


@pytest.fixture(scope="module")
def rows(frame):
    """Five rows without missing values (tritonclient's JSON mode writes NaN, which is not JSON)."""
    return frame.drop(columns=["churned"]).dropna().iloc[:5].reset_index(drop=True)


@pytest.fixture(scope="module")
def expected(servers, rows):
    """The predictor's own V1 answer for ``rows``: what every path and client must get back."""
    response = httpx.post(f"{servers['predictor'].url}/v1/models/{MODEL}:predict", json={"instances": v1(rows)})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"], np.float32)


def v1(rows) -> list[dict]:
    return json.loads(rows.to_json(orient="records"))


def v2_body(rows, **extra) -> dict:
    n = len(rows)
    return {
        "inputs": [
            {"name": "tenure", "shape": [n], "datatype": "INT64", "data": rows.tenure.tolist()},
            {"name": "charges", "shape": [n], "datatype": "FP64", "data": [x["charges"] for x in v1(rows)]},
            {"name": "plan", "shape": [n], "datatype": "BYTES", "data": rows.plan.tolist()},
        ],
        **extra,
    }


# -- conformance: every JSON answer against the OpenAPI ---------------------------------------------------


def conforms(response: httpx.Response, schema: str) -> dict:
    """The answer's JSON, validated against ``#/components/schemas/<schema>`` of the OIP OpenAPI."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    doc = response.json()
    jsonschema.validate(doc, {**spec(), "$ref": f"#/components/schemas/{schema}"})
    return doc


def infer(server, body, headers=None, path=f"/v2/models/{MODEL}/infer", **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(server.url + path, content=content, headers=headers or {}, timeout=30, **kwargs)


def predictions(doc: dict) -> np.ndarray:
    [out] = doc["outputs"]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


@pytest.mark.parametrize("name", SERVERS)
def test_every_answer_of_every_server_conforms_to_the_openapi(servers, rows, expected, name):
    server = servers[name]
    body = v2_body(rows, id="conform-1")
    doc = conforms(infer(server, body, {"content-type": "application/json"}), "inference_response")
    np.testing.assert_allclose(predictions(doc), expected, rtol=1e-6)
    assert doc["model_version"] == VERSION and doc["id"] == "conform-1"
    metadata = conforms(httpx.get(f"{server.url}/v2/models/{MODEL}"), "metadata_model_response")
    assert metadata["versions"] == [VERSION]
    assert [i["name"] for i in metadata["inputs"]] == ["tenure", "charges", "plan"]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1, 2]}]
    conforms(httpx.get(f"{server.url}/v2"), "metadata_server_response")
    for bad in (v2_body(rows, outputs=[{"name": "nope"}]), {"inputs": "x"}, {"inputs": []}):
        response = infer(server, bad, {"content-type": "application/json"})
        assert response.status_code == 400, response.text
        conforms(response, "inference_error_response")


@pytest.mark.parametrize("name", SERVERS)
def test_metadata_through_the_transformer_is_the_predictors(servers, name):
    direct = httpx.get(f"{servers['predictor'].url}/v2/models/{MODEL}").json()
    assert httpx.get(f"{servers[name].url}/v2/models/{MODEL}").json() == direct


# -- tritonclient JSON mode and requested outputs ------------------------------------------------------------


@pytest.mark.parametrize("name", SERVERS)
def test_json_without_content_type_and_with_requested_outputs_is_served(servers, rows, expected, name):
    """tritonclient's JSON mode: no content-type header, ``outputs`` named, binary data off."""
    body = v2_body(rows, outputs=[{"name": "predictions", "parameters": {"binary_data": False}}])
    response = infer(servers[name], body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(predictions(conforms(response, "inference_response")), expected, rtol=1e-6)


@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize(
    "extra",
    [
        {"parameters": {"binary_data_output": True}},
        {"outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]},
    ],
    ids=["binary_data_output", "binary_data"],
)
def test_binary_output_data_is_honoured(servers, rows, expected, name, extra):
    response = infer(servers[name], v2_body(rows, id="bin-1", **extra), {"content-type": "application/json"})
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:json_length])
    jsonschema.validate(header, {**spec(), "$ref": "#/components/schemas/inference_response"} | _binary_outputs())
    [out] = header["outputs"]
    assert header["id"] == "bin-1" and out["parameters"]["binary_data_size"] == expected.nbytes
    data = np.frombuffer(response.content[json_length:], "<f4").reshape(out["shape"])
    np.testing.assert_allclose(data, expected, rtol=1e-6)


def _binary_outputs() -> dict:
    """In the binary extension an output's ``data`` is in the body after the JSON header."""
    spec_copy = json.loads(json.dumps(spec()))
    spec_copy["components"]["schemas"]["response_output"]["required"].remove("data")
    return {"components": spec_copy["components"]}


@pytest.mark.parametrize("name", SERVERS)
def test_an_unknown_requested_output_is_a_400_naming_it(servers, rows, name):
    response = infer(servers[name], v2_body(rows, outputs=[{"name": "probabilities"}]))
    assert response.status_code == 400
    assert "unknown output 'probabilities'" in response.json()["error"]


@pytest.mark.parametrize("name", SERVERS)
def test_the_answer_id_is_the_requests_id_whatever_x_request_id_says(servers, rows, name):
    """Behind Istio every request carries an x-request-id: the V2 answer keeps the client's own id."""
    response = infer(servers[name], v2_body(rows, id="client-42"), {"x-request-id": "istio-abc"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "client-42"


# -- other bodies: CloudEvents, compression, errors ------------------------------------------------------------


@pytest.mark.parametrize("name", SERVERS)
def test_a_structured_cloudevent_is_served_as_kserve_serves_it(servers, rows, expected, name):
    event = {
        "specversion": "1.0",
        "id": f"ce-{uuid.uuid4().hex[:8]}",
        "source": "tests",
        "time": "2026-01-01T00:00:00Z",  # KServe's path takes a body for a structured CloudEvent with a time
        "type": "io.kfloop.test.request",
        "datacontenttype": "application/json",
        "data": {"instances": v1(rows)},
    }
    response = infer(
        servers[name], event, {"content-type": "application/cloudevents+json"}, path=f"/v1/models/{MODEL}:predict"
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["specversion"] == "1.0" and response.headers["content-type"] == "application/cloudevents+json"
    np.testing.assert_allclose(np.asarray(answer["data"]["predictions"], np.float32), expected, rtol=1e-6)


@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_body_is_a_415(servers, rows, name, encoding, compress):
    body = compress(orjson.dumps(v2_body(rows)))
    response = infer(servers[name], body, {"content-type": "application/json", "content-encoding": encoding})
    assert response.status_code == 415
    assert f"content-encoding '{encoding}' is not supported" in response.json()["error"]


@pytest.mark.parametrize("name", SERVERS)
def test_every_error_status_has_an_error_body(servers, rows, name):
    url = servers[name].url
    cases = [
        (httpx.get(f"{url}/v2/models/{MODEL}/infer"), 405),
        (httpx.get(f"{url}/v2/no/such/route"), 404),
        (httpx.get(f"{url}/v2/models/other"), 404),
        (httpx.post(f"{url}/v2/models/{MODEL}/infer", json={"inputs": [{"name": 1}]}), 400),
        (httpx.get(f"{url}/v2/models/{MODEL}/versions/9"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        doc = response.json()
        assert set(doc) == {"error"} and isinstance(doc["error"], str), doc


@pytest.mark.parametrize("name", SERVERS)
def test_the_served_versions_routes_answer(servers, rows, expected, name):
    url = f"{servers[name].url}/v2/models/{MODEL}/versions/{VERSION}"
    assert httpx.get(f"{url}/ready").status_code == 200
    assert conforms(httpx.get(url), "metadata_model_response")["versions"] == [VERSION]
    response = httpx.post(f"{url}/infer", json=v2_body(rows))
    np.testing.assert_allclose(predictions(conforms(response, "inference_response")), expected, rtol=1e-6)
    other = httpx.post(f"{servers[name].url}/v2/models/{MODEL}/versions/4/infer", json=v2_body(rows))
    assert other.status_code == 404 and f"serves version {VERSION} only" in other.json()["error"]


# -- gRPC: off, and refused on the transformer ----------------------------------------------------------------


def test_grpc_is_off_unless_asked_for_and_the_transformer_refuses_it(servers):
    with socket.socket() as s:  # the predictor was given a gRPC port, but not --enable_grpc true
        assert s.connect_ex(("127.0.0.1", servers["predictor"].grpc_port)) != 0
    result = subprocess.run(
        [sys.executable, "-m", "kfloop.serving.model_servers.transformer", "--model_name", MODEL]
        + ["--predictor_host", "127.0.0.1:1", "--enable_grpc", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "error: --enable_grpc true: the drift transformer serves HTTP only" in result.stderr


# -- real clients --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize("mode", ["json", "binary"])
def test_tritonclient_http_works_unchanged(servers, rows, expected, name, mode):
    answer = tritonclient_infer("http", f"127.0.0.1:{servers[name].port}", MODEL, v1(rows), mode)
    assert answer["id"] == "triton-1" and answer["server_live"] and answer["model_ready"]
    np.testing.assert_allclose(np.asarray(answer["predictions"], np.float32), expected, rtol=1e-6)


def test_tritonclient_grpc_works_with_a_predictor_that_serves_grpc(tmp_path, frame, rows, expected, servers):
    """gRPC is off unless asked for; a predictor started with --enable_grpc true serves tritonclient.grpc."""
    bundle = servable_bundle(tmp_path, frame, "churned")
    grpc_port = free_port()
    predictor = Server(
        "predictor",
        "--model_dir",
        str(bundle),
        "--model_version",
        VERSION,
        "--http_host",
        "0.0.0.0",
        "--enable_grpc",
        "true",
        "--grpc_port",
        str(grpc_port),
    )
    try:
        predictor.wait_ready()
        answer = tritonclient_infer("grpc", f"127.0.0.1:{grpc_port}", MODEL, v1(rows))
    finally:
        predictor.stop()
    assert answer["id"] == "triton-1" and answer["server_live"] and answer["model_ready"]
    np.testing.assert_allclose(np.asarray(answer["predictions"], np.float32), expected, rtol=1e-6)


@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_rest_client_works_unchanged(servers, rows, expected, name, binary):
    n = len(rows)
    inputs = [InferInput("tenure", [n], "INT64"), InferInput("charges", [n], "FP32"), InferInput("plan", [n], "BYTES")]
    inputs[0].set_data_from_numpy(rows.tenure.to_numpy(np.int64), binary_data=binary)
    inputs[1].set_data_from_numpy(rows.charges.to_numpy(np.float32), binary_data=binary)
    inputs[2].set_data_from_numpy(rows.plan.to_numpy(object), binary_data=binary)

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=10))
        try:
            return await client.infer(
                servers[name].url, InferRequest(MODEL, inputs, request_id="ks-1"), model_name=MODEL
            )
        finally:
            await client.close()

    result = asyncio.run(call())
    assert result.id == "ks-1"
    np.testing.assert_allclose(result.outputs[0].as_numpy().reshape(expected.shape), expected, rtol=1e-6)

"""Real Open Inference Protocol clients, each call in its own process: tritonclient's HTTP and gRPC
clients (``tritonclient.grpc`` and kserve register the same protobuf names, so neither is imported in
the test process)."""

from __future__ import annotations

import json
import subprocess
import sys

TRITON_CLIENT = """
import json, sys
import numpy as np

protocol, url, mode, model = sys.argv[1:5]
binary, rows = mode == "binary", json.loads(sys.argv[5])
if protocol == "grpc":
    import tritonclient.grpc as client_module
else:
    import tritonclient.http as client_module
client = client_module.InferenceServerClient(url)
meta = client.get_model_metadata(model)
meta = meta if isinstance(meta, dict) else {"inputs": [{"name": i.name, "datatype": i.datatype} for i in meta.inputs]}
inputs = []
for spec in meta["inputs"]:
    dtype = object if spec["datatype"] == "BYTES" else np.float32
    values = np.array([r[spec["name"]] for r in rows], dtype=dtype)
    tensor = client_module.InferInput(spec["name"], [len(rows)], spec["datatype"])
    if protocol == "grpc":
        tensor.set_data_from_numpy(values)
    else:
        tensor.set_data_from_numpy(values, binary_data=binary)
    inputs.append(tensor)
outputs = None
if protocol == "http" and not binary:
    outputs = [client_module.InferRequestedOutput("predictions", binary_data=False)]
result = client.infer(model, inputs, outputs=outputs, request_id="triton-1")
response = result.get_response()
print(json.dumps({
    "id": response["id"] if isinstance(response, dict) else response.id,
    "predictions": result.as_numpy("predictions").tolist(),
    "server_live": client.is_server_live(),
    "model_ready": client.is_model_ready(model),
}))
"""


def tritonclient_infer(protocol: str, url: str, model: str, rows: list[dict], mode: str = "binary") -> dict:
    """Infer ``rows`` (dicts by feature name, no missing values) with tritonclient over ``protocol``
    ("http": ``mode`` "json" or "binary"; "grpc") at ``url`` (host:port), the inputs built from the
    model's metadata; returns the answer's id, predictions and the health calls' results."""
    result = subprocess.run(
        [sys.executable, "-c", TRITON_CLIENT, protocol, url, mode, model, json.dumps(rows)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"tritonclient {protocol} failed:\n{result.stderr}")
    return json.loads(result.stdout)

"""The README's serving examples, run verbatim: the ``curl`` commands of its Serving section are
extracted from README.md and run with curl against a real ``kfloop serve`` (gateway, predictor and
drift transformer) of a model trained on ``sample:churn``, the data of the documented pipeline; each
answer must have the shape of the answer the README shows after it (``# -> ...``)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from kfloop.training.samples import churn
from tests.fakes.bundles import servable_bundle
from tests.fakes.oip_clients import tritonclient_infer
from tests.serving.local.conftest import ServeProcess

pytestmark = pytest.mark.processes  # starts kfloop serve on 127.0.0.1

README = Path(__file__).parents[3] / "README.md"
DOCUMENTED_URL = "http://127.0.0.1:8080"


def serving_examples() -> list[tuple[list[str], str | None]]:
    """The Serving section's request block, as (curl arguments, the answer shown after it or None)."""
    section = README.read_text().split("\n## Serving\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    block = next(b for b in blocks if "curl" in b)
    examples, current, shown = [], None, {}
    for line in block.splitlines(keepends=True):
        answer = re.match(r"\s*# -> (\S+)", line)
        if answer and examples:
            shown[len(examples) - 1] = answer.group(1)
        if line.startswith("curl"):
            current = line
            examples.append(None)
        elif current is not None and not line.startswith("#"):
            current += line
        if current is not None and _complete(current):
            examples[-1], current = shlex.split(current, comments=True), None
    return [(args, shown.get(i)) for i, args in enumerate(examples)]


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
        return True
    except ValueError:  # an open quote: the command goes on
        return False


def shape(doc):
    """The JSON document's structure: keys and list lengths, with numbers and strings as their type."""
    if isinstance(doc, dict):
        return {k: shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [shape(v) for v in doc]
    return "number" if isinstance(doc, (int, float)) else type(doc).__name__


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    Registry(LocalStore(home)).register("churn", servable_bundle(root, churn(1500, seed=0), "churn"))
    serve = ServeProcess(home, "--no-trigger")
    try:
        yield serve
    finally:
        serve.kill()


def test_the_readme_has_v1_v2_and_metadata_examples():
    urls = [next(a for a in args if a.startswith("http")) for args, _ in serving_examples()]
    assert any(u.endswith("/v1/models/churn:predict") for u in urls)
    assert any(u.endswith("/v2/models/churn/infer") for u in urls)
    assert any(u.endswith("/v2/models/churn") for u in urls)
    assert not any("..." in " ".join(args) for args, _ in serving_examples())


def test_the_readme_serving_examples_run_verbatim(served):
    for args, shown in serving_examples():
        command = [a.replace(DOCUMENTED_URL, served.url) for a in args]
        result = subprocess.run([*command, "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=30)
        body, status = result.stdout.rsplit("\n", 1)
        assert result.returncode == 0 and status == "200", (args, result.stdout, result.stderr)
        answer = json.loads(body)
        if shown is not None:
            expected = json.loads(shown)
            assert shape(answer) == shape(expected), (args, answer)
            if "predictions" in expected:  # class probabilities, in the order of the schema's classes
                assert all(abs(sum(row) - 1) < 1e-5 for row in answer["predictions"])


def test_real_clients_through_kfloop_serve_get_the_predictors_answers(served):
    """Through the gateway and the drift transformer: tritonclient (JSON and binary modes) and a V2
    request carrying its own id behind an x-request-id (as Istio sets on every request)."""
    rows = json.loads(churn(4, seed=9).drop(columns=["churn"]).dropna().to_json(orient="records"))
    direct = httpx.post(f"{served.url}/v1/models/churn:predict", json={"instances": rows}).json()["predictions"]
    for mode in ("json", "binary"):
        answer = tritonclient_infer("http", served.url.removeprefix("http://"), "churn", rows, mode)
        assert answer["id"] == "triton-1" and answer["model_ready"]
        np.testing.assert_allclose(answer["predictions"], direct, rtol=1e-6)
    body = {
        "id": "client-7",
        "inputs": [
            {
                "name": k,
                "shape": [len(rows)],
                "datatype": "BYTES" if isinstance(v, str) else "FP64",
                "data": [r[k] for r in rows],
            }
            for k, v in rows[0].items()
        ],
    }
    answer = httpx.post(f"{served.url}/v2/models/churn/infer", json=body, headers={"x-request-id": "istio-1"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "client-7" and answer.headers["x-request-id"] == "istio-1"

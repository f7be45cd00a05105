"""Every error answer is ``{"error": "..."}`` JSON, on every status and path: a sweep of HTTP methods x
paths through a real ``kfloop serve`` (gateway, drift transformer, predictor, trigger on 127.0.0.1),
with and without the control token, and never a 5xx."""

from __future__ import annotations

import collections

import httpx
import orjson
import pytest

from kfloop.names import ADMIN_EVENTS_PATH, ADMIN_MODELS_PATH
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.conftest import free_port, wait_for
from tests.fakes.bundles import churn_frame, servable_bundle
from tests.serving.local.conftest import ServeProcess

pytestmark = pytest.mark.processes  # starts kfloop serve and its servers on 127.0.0.1

MODEL = "churn"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
PATHS = (
    "/",
    "/nowhere",
    "/v1",
    "/v2",
    "/v2/",
    "/v2/health/live",
    "/v2/health/ready",
    "/v1/models",
    f"/v1/models/{MODEL}",
    f"/v1/models/{MODEL}:predict",
    f"/v1/models/{MODEL}:explain",
    "/v1/models/nope:predict",
    f"/v2/models/{MODEL}",
    f"/v2/models/{MODEL}/ready",
    f"/v2/models/{MODEL}/infer",
    f"/v2/models/{MODEL}/versions/1",
    f"/v2/models/{MODEL}/versions/1/infer",
    f"/v2/models/{MODEL}/versions/9/infer",
    "/v2/models/nope/infer",
    "/latest/nowhere",
    ADMIN_MODELS_PATH,
    f"{ADMIN_MODELS_PATH}/{MODEL}",
    f"{ADMIN_MODELS_PATH}/{MODEL}/deploy",
    f"{ADMIN_MODELS_PATH}/{MODEL}/nothing",
    ADMIN_EVENTS_PATH,
    "/healthz",
    "/metrics",
    "/v1/feedback",
    "/v1/status",
    "/v1/dead-letters",
    "/docs",
    "/openapi.json",
)
BODIES = (b"", b"{}", b"{not json")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    home = root / "home"
    registry = Registry(LocalStore(home))
    registry.register(MODEL, servable_bundle(root, churn_frame(400), "churned"))
    registry.set_stage(MODEL, 1, "production")
    trigger_port = free_port()
    serve = ServeProcess(home, "--model", MODEL, "--trigger-port", str(trigger_port))
    serve.trigger_url = f"http://127.0.0.1:{trigger_port}"
    try:
        wait_for(lambda: httpx.get(serve.url + "/v2/health/ready").status_code == 200, 90, "the gateway to be ready")
        yield serve
    finally:
        serve.kill()


def servers(serve: ServeProcess) -> dict[str, str]:
    status = httpx.get(f"{serve.url}{ADMIN_MODELS_PATH}/{MODEL}", headers=serve.auth).json()
    processes = status["stable"]["processes"]
    return {
        "gateway": serve.url,
        "transformer": f"http://127.0.0.1:{processes['transformer']['port']}",
        "predictor": f"http://127.0.0.1:{processes['predictor']['port']}",
        "trigger": serve.trigger_url,
    }


def test_every_error_body_is_json_with_an_error_on_every_method_and_path(served):
    targets = servers(served)
    assert httpx.get(targets["trigger"] + "/healthz").status_code == 200, targets
    bad, counts = [], {}
    with httpx.Client(timeout=30, trust_env=False) as client:
        for server, base in targets.items():
            for method in METHODS:
                for path in PATHS:
                    for auth in (served.auth, {}):
                        for body in BODIES if method in ("POST", "PUT", "PATCH") else (b"",):
                            headers = {**auth, "content-type": "application/json"} if body else auth
                            r = client.request(method, base + path, content=body, headers=headers)
                            counts[server] = counts.get(server, 0) + 1
                            where = (server, method, path, bool(auth), body[:10], r.status_code, r.text[:120])
                            if r.status_code >= 500 and r.status_code != 501:  # 501: no explainer (KServe)
                                bad.append(("5xx", *where))
                            elif r.status_code >= 400:
                                try:
                                    doc = orjson.loads(r.content)
                                except orjson.JSONDecodeError:
                                    bad.append(("not JSON", *where))
                                    continue
                                if not (isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]):
                                    bad.append(("no error", *where))
                                elif not r.headers.get("content-type", "").startswith("application/json"):
                                    bad.append(("content-type", *where))
    kinds = collections.Counter((kind, server, status) for kind, server, _, _, _, _, status, _ in bad)
    assert not bad, f"{sorted(kinds.items())}\n" + "\n".join(map(str, bad[:20])) + f"\n... {len(bad)} in all"
    assert min(counts.values()) > 300, counts

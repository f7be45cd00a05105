"""A fake Kubernetes API server on 127.0.0.1 that keeps InferenceServices and records every call, and
a kubeconfig pointing the Kubernetes client at it."""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from kubernetes import client

NS = "kfloop-test"


class FakeKubeAPI:
    """InferenceService endpoints of a Kubernetes API server, in memory (see the module doc)."""

    def __init__(self):
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[dict] = []
        self.denied: set[str] = set()  # verbs answered 403
        self.kserve_installed = True
        self.concurrent_writer = False  # every GET is followed by someone else's write
        self.revisions: dict[tuple[str, str], list[tuple[str, dict]]] = {}
        self.rolled_out: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, doc = fake.handle(self.command, self.path, self.headers.get("Content-Type"), body)
                data = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(doc, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def api(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(client.ApiClient(client.Configuration(host=self.host)))

    def writes(self) -> list[dict]:
        return [r for r in self.requests if r["method"] != "GET"]

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, path: str, content_type: str | None, raw: bytes):
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append({"method": method, "path": path, "content_type": content_type, "body": body})
            match = ISVC_PATH.match(urlsplit(path).path)
            if not match or not self.kserve_installed:
                return 404, "404 page not found\n"  # what the API server answers for an unknown group
            namespace, name = match.groups()
            verb = VERBS.get(method)
            if verb is None:
                return 405, _status_doc(405, "MethodNotAllowed", f"{method} is not implemented by the fake")
            if verb in self.denied:
                return 403, _status_doc(
                    403,
                    "Forbidden",
                    (
                        f'inferenceservices.serving.kserve.io "{name or body["metadata"]["name"]}" is forbidden: '
                        f'User "system:serviceaccount:{namespace}:default-editor" cannot {verb} resource '
                        f'"inferenceservices" in API group "serving.kserve.io" in the namespace "{namespace}"'
                    ),
                )
            return getattr(self, f"_{verb}")(namespace, name, content_type, body)

    def _get(self, namespace, name, content_type, body):
        if name is None:
            return 200, {
                "kind": "InferenceServiceList",
                "items": [o for (ns, _), o in self.objects.items() if ns == namespace],
            }
        obj = self.objects.get((namespace, name))
        if obj is None:
            return 404, _not_found(name)
        answer = copy.deepcopy(obj)
        if self.concurrent_writer:
            obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return 200, answer

    def _create(self, namespace, name, content_type, body):
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            return 409, _status_doc(
                409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{name}" already exists'
            )
        obj = copy.deepcopy(body)
        obj["metadata"].update(
            namespace=namespace, uid=f"uid-{name}", generation=1, resourceVersion=str(next(self._versions))
        )
        obj.pop("status", None)
        self.objects[(namespace, name)] = obj
        return 201, copy.deepcopy(obj)

    def _patch(self, namespace, name, content_type, body):
        if content_type != "application/merge-patch+json":
            return 415, _status_doc(
                415, "UnsupportedMediaType", f"the fake applies merge patches only, not {content_type}"
            )
        obj = self.objects.get((namespace, name))
        if obj is None:
            return 404, _not_found(name)
        expected = (body.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != obj["metadata"]["resourceVersion"]:
            return 409, _status_doc(
                409,
                "Conflict",
                (
                    f'Operation cannot be fulfilled on inferenceservices.serving.kserve.io "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again"
                ),
            )
        patched = merge_patch(obj, {k: v for k, v in body.items() if k != "status"})  # status is a subresource
        patched["metadata"].update({k: obj["metadata"][k] for k in ("name", "namespace", "uid", "generation")})
        if patched["spec"] != obj["spec"]:
            patched["metadata"]["generation"] += 1
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(namespace, name)] = patched
        return 200, copy.deepcopy(patched)

    # -- the KServe controller, Serverless mode ---------------------------------------------------

    def reconcile(self, name: str, namespace: str = NS) -> dict:
        """Write the status KServe would once the latest revision is ready."""
        key = (namespace, name)
        obj = self.objects[key]
        spec = obj["spec"]["predictor"]
        config = {k: v for k, v in spec.items() if k != "canaryTrafficPercent"}
        revisions = self.revisions.setdefault(key, [])
        if not revisions or revisions[-1][1] != config:
            revisions.append((f"{name}-predictor-{len(revisions) + 1:05d}", copy.deepcopy(config)))
        latest = revisions[-1][0]
        previous, rolled = self.rolled_out.get(key, (None, None))
        percent = spec.get("canaryTrafficPercent")
        if rolled in (None, latest) or percent in (None, 100):
            traffic = [{"revisionName": latest, "percent": 100, "latestRevision": True, "tag": "latest"}]
            if rolled != latest:
                previous, rolled = rolled, latest
        else:
            traffic = [
                {"revisionName": latest, "percent": percent, "latestRevision": True, "tag": "latest"},
                {"revisionName": rolled, "percent": 100 - percent, "latestRevision": False, "tag": "prev"},
            ]
        self.rolled_out[key] = (previous, rolled)
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "url": f"http://{name}.{namespace}.example.com",
            "deploymentMode": obj["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode"),
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {
                    "latestCreatedRevision": latest,
                    "latestReadyRevision": latest,
                    "latestRolledoutRevision": rolled,
                    "traffic": traffic,
                    **({"previousRolledoutRevision": previous} if previous else {}),
                }
            },
        }
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return obj


def use_kubeconfig(monkeypatch, path: Path, fake: FakeKubeAPI, namespace: str) -> None:
    """Point KUBECONFIG at a kubeconfig for the fake API server whose context names ``namespace``."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "fake", "cluster": {"server": fake.host}}],
        "users": [{"name": "me", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "me", "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod


ISVC_PATH = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?$")

VERBS = {"GET": "get", "POST": "create", "PATCH": "patch"}


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status_doc(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    doc = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return {**doc, "details": details} if details else doc


def _not_found(name: str) -> dict:
    return _status_doc(
        404,
        "NotFound",
        f'inferenceservices.serving.kserve.io "{name}" not found',
        {"name": name, "group": "serving.kserve.io", "kind": "inferenceservices"},
    )

"""A fake Kubernetes API server on 127.0.0.1 that keeps InferenceServices and records every call, and
a kubeconfig pointing the Kubernetes client at it.

``reconcile`` plays the KServe controller: Knative (Serverless) mode's revisions and traffic split,
or Standard mode's ``spec.canary`` (``FakeKubeAPI.kserve`` says which release's behaviour: see
``_reconcile_standard``), with the Gateway API HTTPRoutes it writes, which the fake also serves."""

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
        self.routes_denied = False  # every HTTPRoute request answered 403 (a Role without httproutes)
        self.kserve_installed = True
        self.concurrent_writer = False  # every GET is followed by someone else's write
        self.revisions: dict[tuple[str, str], list[tuple[str, dict]]] = {}
        # Standard mode: which KServe the controller is ("0.19": the CRD has no spec.canary, the API server
        # prunes it; "0.20": canary Deployments, no traffic to them; "main": kserve#5912 + #5984 weighted
        # HTTPRoutes to ready canaries), whether KServe writes Gateway API HTTPRoutes (enableGatewayApi),
        # how many reconciles a canary Deployment takes to have an available pod, and whether every GET of
        # an InferenceService is preceded by a reconcile (a controller acting between any two reads)
        self.kserve = "main"
        self.gateway_api = True
        self.canary_start_reconciles = 2
        self.auto_reconcile = False
        self.routes: dict[tuple[str, str], dict] = {}
        self.addresses: dict[str, str] = {}  # InferenceService name -> the predictor address reconcile reports
        self.deployments: dict[tuple[str, str], int] = {}  # Standard mode: Deployment -> reconciles seen
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

    def apply(self, obj: dict, namespace: str = NS) -> dict:
        """Create ``obj`` as someone outside the code under test would (``kubectl apply``): not recorded."""
        with self._lock:
            code, created = self._create(namespace, None, "application/json", obj)
        assert code == 201, created
        return created

    def writes(self) -> list[dict]:
        return [r for r in self.requests if r["method"] != "GET"]

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, path: str, content_type: str | None, raw: bytes):
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append({"method": method, "path": path, "content_type": content_type, "body": body})
            route = ROUTE_PATH.match(urlsplit(path).path)
            if route:
                return self._route(method, *route.groups())
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

    def _route(self, method: str, namespace: str, name: str):
        if not self.gateway_api:  # KServe writes Ingresses then; here: the Gateway API CRDs are not installed
            return 404, "404 page not found\n"
        if method != "GET":
            return 405, _status_doc(405, "MethodNotAllowed", f"{method} of httproutes is not implemented by the fake")
        if "get" in self.denied or self.routes_denied:
            return 403, _status_doc(
                403,
                "Forbidden",
                f'httproutes.gateway.networking.k8s.io "{name}" is forbidden: User '
                f'"system:serviceaccount:{namespace}:default-editor" cannot get resource "httproutes" in API group '
                f'"gateway.networking.k8s.io" in the namespace "{namespace}"',
            )
        route = self.routes.get((namespace, name))
        if route is None:
            return 404, _status_doc(
                404,
                "NotFound",
                f'httproutes.gateway.networking.k8s.io "{name}" not found',
                {"name": name, "group": "gateway.networking.k8s.io", "kind": "httproutes"},
            )
        return 200, copy.deepcopy(route)

    def _prune(self, obj: dict) -> None:
        """A structural CRD drops fields its schema does not know: spec.canary before KServe 0.20."""
        if self.kserve == "0.19":
            obj.get("spec", {}).pop("canary", None)

    def _get(self, namespace, name, content_type, body):
        if name is not None and self.auto_reconcile and (namespace, name) in self.objects:
            self.reconcile(name, namespace)
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
        self._prune(obj)
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
        self._prune(patched)
        if patched["spec"] != obj["spec"]:
            patched["metadata"]["generation"] += 1
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(namespace, name)] = patched
        return 200, copy.deepcopy(patched)

    def _delete(self, namespace, name, content_type, body):
        if name is None or (namespace, name) not in self.objects:
            return 404, _not_found(name)
        del self.objects[(namespace, name)]
        self.revisions.pop((namespace, name), None)
        self.rolled_out.pop((namespace, name), None)
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    # -- the KServe controller, Serverless mode ---------------------------------------------------

    def reconcile(self, name: str, namespace: str = NS) -> dict:
        """Write the status KServe would once the latest revision is ready (Standard mode:
        ``_reconcile_standard``)."""
        key = (namespace, name)
        obj = self.objects[key]
        mode = obj["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
        if mode in ("Standard", "RawDeployment"):
            return self._reconcile_standard(obj, name, namespace)
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
            "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
            "deploymentMode": obj["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode"),
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {
                    "latestCreatedRevision": latest,
                    "latestReadyRevision": latest,
                    "latestRolledoutRevision": rolled,
                    "traffic": traffic,
                    "address": {
                        "url": self.addresses.get(name, f"http://{name}-predictor.{namespace}.svc.cluster.local")
                    },
                    **({"previousRolledoutRevision": previous} if previous else {}),
                }
            },
        }
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return obj

    # -- the KServe controller, Standard mode --------------------------------------------------------

    def _reconcile_standard(self, obj: dict, name: str, namespace: str) -> dict:
        """What KServe's predictor and HTTPRoute reconcilers do in Standard mode (kserve main:
        components/predictor.go ``reconcileCanaryDeployments``, ingress/httproute_reconciler.go
        ``applyCanaryWeights``):

        - the stable predictor runs as Deployment and Service ``{isvc}[-{predictor.name}]-predictor``,
          each ``spec.canary`` entry as ``{isvc}-{name}-predictor``; a canary Deployment has an
          available pod from its ``canary_start_reconciles``-th reconcile on (pods take time to start);
          Deployments of removed canaries are deleted (orphan cleanup), a promoted canary's is kept;
        - ``status.canaryStatuses``: ``{name, ready, trafficPercent}`` per entry, and the condition
          ``CanaryPredictorReady`` (True when all are ready, reason AllCanariesReady, else False,
          CanariesNotReady), cleared when there is no canary;
        - with the Gateway API (``gateway_api``) the HTTPRoutes ``{isvc}-predictor`` (the predictor's
          host) and ``{isvc}`` (the top-level host: the transformer's Service when there is one): one
          rule whose single backendRef is the stable Service (``{isvc}-transformer`` on the top
          level) without a weight; on ``kserve == "main"`` (kserve#5912, #5984), with canaries, the
          stable backend weighs 100 minus the ready canaries' percentages and each ready canary's
          Service its ``trafficPercent``; a canary that is not ready gets no backendRef. KServe 0.20
          (``kserve == "0.20"``) leaves the routes unweighted: the canaries get no traffic.
        """
        spec = obj["spec"]
        stable = _predictor_service(name, spec["predictor"].get("name"))
        canaries = spec.get("canary") or []
        wanted = {stable, *(_predictor_service(name, c["predictor"]["name"]) for c in canaries)}
        for key in [k for k in self.deployments if k[0] == namespace and k[1].startswith(f"{name}-")]:
            if key[1] not in wanted:
                del self.deployments[key]
        for deployment in wanted:
            self.deployments[(namespace, deployment)] = self.deployments.get((namespace, deployment), 0) + 1
        statuses = [
            {
                "name": c["predictor"]["name"],
                "ready": self.deployments[(namespace, _predictor_service(name, c["predictor"]["name"]))]
                >= self.canary_start_reconciles,
                "trafficPercent": int(c.get("trafficPercent") or 0),
            }
            for c in canaries
        ]
        conditions = [
            {"type": "PredictorReady", "status": "True"},
            {"type": "IngressReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ]
        if canaries:
            ready = all(s["ready"] for s in statuses)
            conditions.append(
                {
                    "type": "CanaryPredictorReady",
                    "status": "True" if ready else "False",
                    "reason": "AllCanariesReady" if ready else "CanariesNotReady",
                }
            )
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "url": f"http://{name}-{namespace}.example.com",
            "deploymentMode": "Standard",
            "conditions": conditions,
            "components": {"predictor": {"url": f"http://{name}-predictor-{namespace}.example.com"}},
            **({"canaryStatuses": statuses} if statuses else {}),
        }
        if self.gateway_api:
            front = f"{name}-transformer" if spec.get("transformer") else stable
            for route, backend in ((f"{name}-predictor", stable), (name, front)):
                self.routes[(namespace, route)] = self._httproute(route, namespace, name, backend, statuses)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return obj

    def _httproute(self, route: str, namespace: str, isvc: str, backend: str, statuses: list[dict]) -> dict:
        def ref(service: str, weight: int | None = None) -> dict:
            out = {"group": "", "kind": "Service", "name": service, "namespace": namespace, "port": 80}
            return out if weight is None else {**out, "weight": weight}

        ready = [s for s in statuses if s["ready"]] if self.kserve == "main" else []
        if statuses and self.kserve == "main":
            refs = [ref(backend, 100 - sum(s["trafficPercent"] for s in ready))]
            refs += [ref(_predictor_service(isvc, s["name"]), s["trafficPercent"]) for s in ready]
        else:
            refs = [ref(backend)]
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": route, "namespace": namespace},
            "spec": {
                "hostnames": [f"{route}-{namespace}.example.com"],
                "parentRefs": [{"kind": "Gateway", "name": "kserve-ingress-gateway", "namespace": "kserve"}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": refs}],
            },
        }


def _predictor_service(isvc: str, predictor_name: str | None) -> str:
    """KServe's constants.PredictorServiceName."""
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


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

ROUTE_PATH = re.compile(r"^/apis/gateway\.networking\.k8s\.io/v1/namespaces/([^/]+)/httproutes/([^/]+)$")

VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete"}


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

"""KubernetesTarget against a fake Kubernetes API server on 127.0.0.1, with a real model registry.

The fake (``FakeKubeAPI``) keeps InferenceServices in memory behind the real REST paths, applies
JSON merge patches with the API server's resourceVersion preconditions, answers errors with
``Status`` objects as the API server does, records every request, and, on ``reconcile``, writes
the status the KServe controller would in Serverless mode: a new predictor revision per predictor
spec change and Knative's traffic split (``latest`` / ``prev``) from ``canaryTrafficPercent``.
The real kubernetes client talks to it over HTTP.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client

from kfloop.errors import ConfigError, RegistryError
from kfloop.rollout import actions as rollout
from kfloop.rollout.targets import isvc_template
from kfloop.rollout.targets.kubernetes import KubernetesTarget
from kfloop.store.bundle import METRICS_FILE, MODEL_FILE, SCHEMA_FILE, write_manifest
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from tests.conftest import REPO, free_port

NS = "kfloop-test"
ISVC_PATH = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?$")
VERBS = {"GET": "get", "POST": "create", "PATCH": "patch"}

# ---------------------------------------------------------------- the fake API server


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


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def fake():
    server = FakeKubeAPI()
    yield server
    server.close()


@pytest.fixture
def target(fake) -> KubernetesTarget:
    return KubernetesTarget(namespace=NS, api=fake.api())


def _bundle(root: Path) -> Path:
    """A model bundle with a placeholder booster: the rollout passes only its URI on."""
    root.mkdir(parents=True)
    (root / MODEL_FILE).write_bytes(b"placeholder booster")
    schema = {
        "target": "churn",
        "task": "binary",
        "classes": ["0", "1"],
        "features": [{"name": "tenure", "kind": "numeric"}],
    }
    (root / SCHEMA_FILE).write_text(json.dumps(schema))
    (root / METRICS_FILE).write_text(json.dumps({"auc": 0.8}))
    write_manifest(root)
    return root


@pytest.fixture
def registry(s3_settings, tmp_path) -> Registry:
    """An S3 registry with versions 1, 2 and 3 of ``churn`` in staging."""
    reg = Registry(open_store(s3_settings))
    for n in (1, 2, 3):
        reg.register("churn", _bundle(tmp_path / f"bundle{n}"))
    return reg


def _predictor(fake: FakeKubeAPI, name: str = "churn") -> dict:
    return fake.objects[(NS, name)]["spec"]["predictor"]


def _storage_uri(fake: FakeKubeAPI, name: str = "churn") -> str:
    return isvc_template.storage_uri(_predictor(fake, name))


def _stages(registry: Registry) -> dict[int, str]:
    return {r.version: r.stage for r in registry.list_versions("churn")}


def _shares(status: dict) -> tuple:
    return tuple((status[k] or {}).get("version") for k in ("stable", "canary")), tuple(
        (status[k] or {}).get("percent") for k in ("stable", "canary")
    )


@pytest.fixture
def crd_errors():
    """``crd_errors(obj)``: violations of the strict KServe v0.20 CRD schema (skips where absent)."""
    try:
        from tests.manifests.test_manifests import SCHEMAS, schema_errors
    except ImportError as e:
        pytest.skip(f"the CRD schema loader of tests/manifests/test_manifests.py is not importable: {e}")
    if not SCHEMAS.is_dir():
        pytest.skip(f"reference CRD schemas not found at {SCHEMAS} (expected beside the repository)")
    return schema_errors


def _deploy_v1(registry, target, fake):
    rollout.deploy(registry, target, "churn:1")
    fake.reconcile("churn")


# ---------------------------------------------------------------- deploy, promote, rollback


def test_first_deploy_creates_the_service_from_the_base_manifest_with_no_canary(registry, target, fake, crd_errors):
    status = rollout.deploy(registry, target, "churn:1")
    (post,) = fake.writes()
    assert post["method"] == "POST" and post["path"].endswith(f"/namespaces/{NS}/inferenceservices")
    created = fake.objects[(NS, "churn")]
    assert _storage_uri(fake) == registry.get("churn", 1).bundle_uri
    assert _storage_uri(fake).startswith("s3://") and _storage_uri(fake).endswith("/")
    assert "canaryTrafficPercent" not in created["spec"]["predictor"]
    assert created["metadata"]["annotations"]["kfloop.io/model-version"] == "1"
    assert created["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    base = isvc_template.base()
    assert created["spec"]["transformer"] == base["spec"]["transformer"]
    assert created["spec"]["predictor"]["containers"][0]["image"] == base["spec"]["predictor"]["containers"][0]["image"]
    assert crd_errors(post["body"]) == []
    assert _stages(registry) == {1: "production", 2: "staging", 3: "staging"}
    assert _shares(status) == ((1, None), (100, None)) and status["ready"] is False  # no controller yet
    assert fake.reconcile("churn") and target.status("churn")["ready"] is True


def test_a_canary_patches_the_new_bundle_and_the_percentage_then_promote_gives_it_all_traffic(
    registry, target, fake, crd_errors
):
    _deploy_v1(registry, target, fake)
    status = rollout.deploy(registry, target, "churn:2", canary_percent=20)
    patch = fake.writes()[-1]
    assert patch["method"] == "PATCH" and patch["content_type"] == "application/merge-patch+json"
    assert patch["body"]["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert patch["body"]["metadata"]["resourceVersion"]  # guarded against concurrent writers
    assert _storage_uri(fake) == registry.get("churn", 2).bundle_uri
    assert _predictor(fake)["canaryTrafficPercent"] == 20
    args = _predictor(fake)["containers"][0]["args"]
    assert args[args.index("--model_version") + 1] == "2"  # answers and captures name the canary
    assert status["ready"] is False  # the new revision is not ready yet
    assert _stages(registry) == {1: "production", 2: "staging", 3: "staging"}
    obj = fake.reconcile("churn")
    assert crd_errors(obj) == []
    status = target.status("churn")
    assert _shares(status) == ((1, 2), (80, 20)) and status["ready"] is True
    assert {(r["tag"], r["version"], r["percent"]) for r in status["revisions"]} == {("latest", 2, 20), ("prev", 1, 80)}

    rollout.promote(registry, target, "churn")
    assert "canaryTrafficPercent" not in _predictor(fake)
    assert crd_errors(fake.reconcile("churn")) == []
    status = target.status("churn")
    assert _shares(status) == ((2, None), (100, None))
    assert [(r["version"], r["percent"]) for r in status["revisions"]] == [(2, 100)]
    assert _stages(registry) == {1: "archived", 2: "production", 3: "staging"}


def test_rollback_sends_all_traffic_to_the_previous_revision_and_rejects_the_canary(registry, target, fake):
    _deploy_v1(registry, target, fake)
    rollout.deploy(registry, target, "churn:2", canary_percent=20)
    fake.reconcile("churn")
    rollout.rollback(registry, target, "churn")
    assert _predictor(fake)["canaryTrafficPercent"] == 0
    fake.reconcile("churn")
    status = target.status("churn")
    assert _shares(status) == ((1, None), (100, None)) and status["rolled_back_version"] == 2
    assert {(r["tag"], r["version"], r["percent"]) for r in status["revisions"]} == {("latest", 2, 0), ("prev", 1, 100)}
    assert _stages(registry) == {1: "production", 2: "rejected", 3: "staging"}
    with pytest.raises(RegistryError, match="no canary"):
        rollout.rollback(registry, target, "churn")
    # the next canary splits with the stable version again
    rollout.deploy(registry, target, "churn:3", canary_percent=50)
    fake.reconcile("churn")
    assert _shares(target.status("churn")) == ((1, 3), (50, 50))


def test_a_full_deploy_over_a_running_version_replaces_it(registry, target, fake):
    _deploy_v1(registry, target, fake)
    rollout.deploy(registry, target, "churn:2")
    assert "canaryTrafficPercent" not in _predictor(fake)
    fake.reconcile("churn")
    assert _shares(target.status("churn")) == ((2, None), (100, None))
    assert _stages(registry) == {1: "archived", 2: "production", 3: "staging"}


@pytest.mark.parametrize(
    "where, mode", [("annotation", "RawDeployment"), ("annotation", "Standard"), ("status", "Standard")]
)
def test_a_canary_is_refused_where_kserve_would_not_split_traffic(registry, target, fake, where, mode):
    _deploy_v1(registry, target, fake)
    obj = fake.objects[(NS, "churn")]
    if where == "annotation":
        obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = mode
    else:
        del obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        obj["status"]["deploymentMode"] = mode
    writes = len(fake.writes())
    with pytest.raises(ConfigError, match=f"{mode} mode.*ignores canaryTrafficPercent.*Knative"):
        rollout.deploy(registry, target, "churn:2", canary_percent=20)
    assert len(fake.writes()) == writes and _stages(registry)[2] == "staging"
    rollout.deploy(registry, target, "churn:2")  # a full deploy is fine in any mode
    assert _storage_uri(fake) == registry.get("churn", 2).bundle_uri


def test_the_stock_runtime_predictor_gets_the_booster_file_as_storage_uri(registry, target, fake):
    _deploy_v1(registry, target, fake)
    fake.objects[(NS, "churn")]["spec"]["predictor"] = {
        "model": {"modelFormat": {"name": "xgboost"}, "runtime": "kserve-xgbserver", "storageUri": "s3://x/model.ubj"}
    }
    rollout.deploy(registry, target, "churn:2", canary_percent=10)
    assert _predictor(fake)["model"]["storageUri"] == registry.get("churn", 2).bundle_uri + MODEL_FILE
    assert _predictor(fake)["model"]["runtime"] == "kserve-xgbserver"


# ---------------------------------------------------------------- errors


def test_forbidden_names_the_missing_permission_and_changes_nothing(registry, target, fake):
    _deploy_v1(registry, target, fake)
    fake.denied.add("patch")
    with pytest.raises(
        ConfigError,
        match=f"forbidden: the ServiceAccount needs patch on "
        f"inferenceservices.serving.kserve.io in namespace {NS}.*cannot patch",
    ):
        rollout.deploy(registry, target, "churn:2", canary_percent=20)
    assert _stages(registry)[2] == "staging" and _storage_uri(fake) == registry.get("churn", 1).bundle_uri
    fake.denied = {"get"}
    with pytest.raises(ConfigError, match="needs get on inferenceservices"):
        target.status("churn")


def test_a_concurrent_change_is_a_conflict_not_a_lost_update(registry, target, fake):
    _deploy_v1(registry, target, fake)
    fake.concurrent_writer = True
    with pytest.raises(RegistryError, match="conflict on InferenceService churn.*nothing was applied"):
        rollout.deploy(registry, target, "churn:2", canary_percent=20)
    assert _storage_uri(fake) == registry.get("churn", 1).bundle_uri and _stages(registry)[2] == "staging"


def test_missing_kserve_and_unreachable_api_server_are_clear_errors(registry, fake):
    fake.kserve_installed = False
    with pytest.raises(ConfigError, match="does not serve inferenceservices.serving.kserve.io.*KServe installed"):
        KubernetesTarget(NS, api=fake.api()).status("churn")
    api = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{free_port()}")))
    with pytest.raises(ConfigError, match="cannot reach the Kubernetes API at http://127.0.0.1"):
        rollout.deploy(registry, KubernetesTarget(NS, api=api), "churn:1")
    assert _stages(registry)[1] == "staging"


def test_a_version_on_a_local_registry_cannot_be_deployed(local_settings, tmp_path, target, fake):
    reg = Registry(open_store(local_settings))
    reg.register("churn", _bundle(tmp_path / "b"))
    with pytest.raises(ConfigError, match="file://.*KServe cannot download"):
        rollout.deploy(reg, target, "churn:1")
    assert fake.writes() == []


def test_status_of_a_model_never_deployed(target):
    status = target.status("fraud")
    assert status["exists"] is False and status["stable"] is None and status["canary"] is None


def _use_kubeconfig(monkeypatch, path: Path, fake: FakeKubeAPI, namespace: str) -> None:
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


def test_configuration_comes_from_the_kubeconfig_with_its_namespace(fake, tmp_path, monkeypatch):
    _use_kubeconfig(monkeypatch, tmp_path / "config", fake, "team-a")
    target = KubernetesTarget()
    assert target.status("churn")["namespace"] == "team-a"
    assert fake.requests[-1]["path"].startswith("/apis/serving.kserve.io/v1beta1/namespaces/team-a/")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no Kubernetes configuration"):
        KubernetesTarget().status("churn")


def test_the_pipeline_deploy_step_serves_the_registered_version(registry, fake, s3_settings, tmp_path, monkeypatch):
    from kfloop.components.deploy import deploy

    _use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
    for key, value in s3_settings.storage_env().items():
        monkeypatch.setenv(key, value)
    first = json.loads(deploy("churn:1", "kubernetes", 10, "", "unused"))
    assert _shares(first) == ((1, None), (100, None))  # nothing served yet: all traffic, no canary
    assert "canaryTrafficPercent" not in _predictor(fake)
    fake.reconcile("churn")
    deploy("churn:2", "kubernetes", 10, NS, "unused")
    assert _predictor(fake)["canaryTrafficPercent"] == 10 and _storage_uri(fake) == registry.get("churn", 2).bundle_uri
    assert _stages(registry) == {1: "production", 2: "staging", 3: "staging"}
    with pytest.raises(ConfigError, match="'kubernetess': expected 'kubernetes' or 'local'"):
        deploy("churn:3", "kubernetess", 10, NS, "unused")


# ---------------------------------------------------------------- the template


def test_the_embedded_template_is_the_base_manifest():
    manifest = REPO / "manifests" / "base" / "inferenceservice.yaml"
    assert isvc_template.BASE_YAML == manifest.read_text(), (
        "kfloop/rollout/targets/isvc_template.py is stale: "
        "run 'python -m kfloop.rollout.targets.isvc_template' and commit it"
    )


def test_sync_copies_an_edited_manifest_into_the_module(tmp_path):
    module = tmp_path / "isvc_template.py"
    shutil.copy(isvc_template.__file__, module)
    manifest = tmp_path / "inferenceservice.yaml"
    manifest.write_text(isvc_template.BASE_YAML.replace("maxReplicas: 3", "maxReplicas: 5"))
    assert isvc_template.sync(manifest, module) is True
    assert isvc_template.sync(manifest, module) is False
    namespace: dict = {"__file__": str(module)}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    assert namespace["BASE_YAML"] == manifest.read_text()


def test_the_template_names_the_service_and_both_servers_after_the_model(crd_errors):
    obj = isvc_template.inferenceservice(
        "fraud",
        "team-a",
        "s3://kfloop/models/fraud/bundles/abc/",
        {"kfloop.io/model-version": "4"},
        image="registry.example/kfloop:1",
    )
    assert (obj["metadata"]["name"], obj["metadata"]["namespace"]) == ("fraud", "team-a")
    for component in ("predictor", "transformer"):
        container = obj["spec"][component]["containers"][0]
        assert container["args"][container["args"].index("--model_name") + 1] == "fraud"
        assert container["image"] == "registry.example/kfloop:1"
    assert isvc_template.storage_uri(obj["spec"]["predictor"]) == "s3://kfloop/models/fraud/bundles/abc/"
    assert crd_errors(obj) == []

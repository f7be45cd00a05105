"""KubernetesTarget against a fake Kubernetes API server on 127.0.0.1, with a real model registry.

The fake (``FakeKubeAPI``) keeps InferenceServices in memory behind the real REST paths, applies
JSON merge patches with the API server's resourceVersion preconditions, answers errors with
``Status`` objects as the API server does, records every request, and, on ``reconcile``, writes
the status the KServe controller would in Serverless mode: a new predictor revision per predictor
spec change and Knative's traffic split (``latest`` / ``prev``) from ``canaryTrafficPercent``.
The real kubernetes client talks to it over HTTP. Standard mode's ``spec.canary``:
``test_standard_canary.py``.
"""

from __future__ import annotations

import json
import shutil

import pytest
from kubernetes import client

from kfloop.errors import ConfigError, RegistryError
from kfloop.rollout import actions as rollout
from kfloop.rollout.targets import isvc_template
from kfloop.rollout.targets.kubernetes import KubernetesTarget
from kfloop.store.bundle import MODEL_FILE
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from tests.conftest import REPO, free_port
from tests.fakes.kube_api import NS, FakeKubeAPI, use_kubeconfig
from tests.rollout.targets.conftest import _bundle

# ---------------------------------------------------------------- the fake API server


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def fake():
    server = FakeKubeAPI()
    yield server
    server.close()


@pytest.fixture
def target(fake) -> KubernetesTarget:
    return KubernetesTarget(namespace=NS, api=fake.api())


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
        from tests.fakes.manifests import SCHEMAS, schema_errors
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


def test_configuration_comes_from_the_kubeconfig_with_its_namespace(fake, tmp_path, monkeypatch):
    use_kubeconfig(monkeypatch, tmp_path / "config", fake, "team-a")
    target = KubernetesTarget()
    assert target.status("churn")["namespace"] == "team-a"
    assert fake.requests[-1]["path"].startswith("/apis/serving.kserve.io/v1beta1/namespaces/team-a/")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no Kubernetes configuration"):
        KubernetesTarget().status("churn")


def test_the_pipeline_deploy_step_serves_the_registered_version(registry, fake, s3_settings, tmp_path, monkeypatch):
    from kfloop.components.deploy import deploy

    use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
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

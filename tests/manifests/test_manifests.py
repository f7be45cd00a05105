"""Offline checks of the Kubernetes manifests under manifests/.

Every kustomization renders with ``kubectl kustomize``; the KServe and Knative resources validate
against the upstream CRD schemas (strictly: unknown fields are errors, as with kubectl's default
server-side field validation); every container is bounded and runs restricted; no credential is
committed; the RBAC stays minimal; and the pieces refer to each other by names that exist.
"""

from __future__ import annotations

import base64
import copy
import os
import re

import pytest
import yaml

from kfloop.config import DEFAULT_IMAGE
from kfloop.store.bundle import STOCK_DIR
from tests.fakes.manifests import (
    MANIFESTS,
    SCHEMAS,
    kustomize_targets,
    load_crd_schemas,
    named,
    of_kind,
    render,
    schema_errors,
)

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1


# ---------------------------------------------------------------- rendering and CRD schemas


@pytest.fixture
def rendered():
    """``rendered(target)``: render manifests/<target>, e.g. ``rendered("overlays/canary")``."""
    return lambda target: render(MANIFESTS / target)


@pytest.fixture
def crd_errors():
    """``crd_errors(obj)``: schema violations of a custom resource (skips without the schemas)."""
    if not SCHEMAS.is_dir():
        pytest.skip(f"reference CRD schemas not found at {SCHEMAS} (expected beside the repository)")
    return schema_errors


TARGETS = kustomize_targets()
OVERLAYS = [t for t in TARGETS if t.startswith("overlays/")]
CRD_KINDS = {"InferenceService", "Trigger", "SinkBinding", "Broker"}
# every monitoring signal's event type and feedback: what the trigger service accepts (kfloop.retraining.policy)
EVENT_TYPES = {
    "io.kfloop.drift.detected",
    "io.kfloop.quality.degraded",
    "io.kfloop.feedback",
    "io.kfloop.data_quality.violated",
    "io.kfloop.prediction_drift.detected",
    "io.kfloop.multivariate_drift.detected",
    "io.kfloop.attribution_drift.detected",
    "io.kfloop.bias_drift.detected",
    "io.kfloop.estimated_quality.dropped",
}
DEPLOYER_VERBS = {"get", "create", "patch"}  # what KubernetesTarget calls (tests/rollout/targets/test_rbac.py)
MODEL_SPEC_KEYS = (
    "model",
    "xgboost",
    "sklearn",
    "lightgbm",
    "onnx",
    "pytorch",
    "tensorflow",
    "triton",
    "pmml",
    "paddle",
    "huggingface",
)
CREDENTIAL_NAME = re.compile(r"(ACCESS_KEY(_ID)?|SECRET(_ACCESS)?(_KEY)?|PASSWORD|TOKEN)$", re.I)
LEAKED = re.compile(r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|minio123|minioadmin|password|PRIVATE KEY", re.I)
PLACEHOLDER = re.compile(r"^(<[^>]+>|\.\.\.|REPLACE[A-Z_]*|CHANGE[_-]?ME)$")


# ---------------------------------------------------------------- helpers


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod-spec-like mapping) for each pod an object describes; InferenceService components
    inline a pod spec."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    spec = doc.get("spec") or {}
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [(where, spec["template"]["spec"])]
    if doc["kind"] == "CronJob":
        return [(where, spec["jobTemplate"]["spec"]["template"]["spec"])]
    if doc["kind"] == "Pod":
        return [(where, spec)]
    if doc["kind"] == "InferenceService":
        return [(f"{where}/{c}", spec[c]) for c in ("predictor", "transformer", "explainer") if c in spec]
    return []


def containers(pod: dict) -> list[dict]:
    """Containers of a pod spec, plus a KServe component's model spec (itself a container)."""
    found = list(pod.get("initContainers", [])) + list(pod.get("containers", []))
    return found + [pod[key] for key in MODEL_SPEC_KEYS if key in pod]


def all_containers(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    return [(where, pod, c) for d in docs for where, pod in pod_specs(d) for c in containers(pod)]


def quantity(value: str | int | float) -> float:
    units = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", str(value))
    assert match and match[2] in units, f"not a Kubernetes quantity: {value!r}"
    return float(match[1]) * units[match[2]]


def kustomization(target: str) -> dict:
    return yaml.safe_load((MANIFESTS / target / "kustomization.yaml").read_text())


def isvc(docs: list[dict]) -> dict:
    return named(docs, "InferenceService", "churn")


def env_value(container: dict, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def arg_value(container: dict, flag: str) -> str | None:
    args = container.get("args", [])
    return args[args.index(flag) + 1] if flag in args else None


# ---------------------------------------------------------------- rendering


def test_the_expected_kustomizations_exist():
    assert {"base", "overlays/local-dev", "overlays/canary", "overlays/xgbserver", "overlays/auto-rollout"} <= set(
        TARGETS
    )


@pytest.mark.parametrize("target", TARGETS)
def test_renders_offline_with_the_resources_of_the_loop(target, rendered):
    docs = rendered(target)
    kinds = {d["kind"] for d in docs}
    assert CRD_KINDS | {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"} <= kinds
    assert len(of_kind(docs, "Trigger")) == len(EVENT_TYPES)


@pytest.mark.parametrize("target", TARGETS)
def test_kustomizations_use_only_local_files_and_no_generated_secrets(target):
    spec = kustomization(target)
    for entry in spec.get("resources", []) + spec.get("components", []):
        assert "://" not in entry and "?ref=" not in entry and not entry.startswith("github.com"), entry
        assert (MANIFESTS / target / entry).exists(), f"{target}: {entry} does not exist"
    assert "secretGenerator" not in spec, f"{target}: secrets are created by the user, not generated"


def test_base_holds_no_namespace_and_the_default_project_image(rendered):
    docs = rendered("base")
    assert [d["metadata"]["name"] for d in docs if "namespace" in d["metadata"]] == []
    images = {c["image"] for _, _, c in all_containers(docs)}
    assert images == {DEFAULT_IMAGE}


@pytest.mark.parametrize("target", OVERLAYS)
def test_overlays_place_everything_in_one_namespace(target, rendered):
    namespaces = {d["metadata"].get("namespace") for d in rendered(target)}
    assert len(namespaces) == 1 and None not in namespaces, namespaces


def test_an_overlay_can_change_the_project_image(tmp_path):
    base = os.path.relpath(MANIFESTS / "base", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [base],
                "images": [
                    {"name": DEFAULT_IMAGE.rsplit(":", 1)[0], "newName": "registry.test/kfloop", "newTag": "9.9.9"}
                ],
            }
        )
    )
    images = {c["image"] for _, _, c in all_containers(render(tmp_path))}
    assert images == {"registry.test/kfloop:9.9.9"}


# ---------------------------------------------------------------- CRD schemas


@pytest.mark.parametrize("target", TARGETS)
def test_custom_resources_validate_against_their_crds(target, rendered, crd_errors):
    checked = [d for d in rendered(target) if d["kind"] in CRD_KINDS]
    assert {d["kind"] for d in checked} == CRD_KINDS
    for doc in checked:
        errors = crd_errors(doc)
        assert errors == [], f"{target} {doc['kind']}/{doc['metadata']['name']}: {errors}"


def _break_canary(obj):
    obj["spec"]["predictor"]["canaryTrafficPercent"] = "twenty"


def _misspell_a_container_field(obj):
    obj["spec"]["predictor"]["containers"][0]["imagePullPolicyy"] = "Always"


def _drop_the_predictor(obj):
    del obj["spec"]["predictor"]


@pytest.mark.parametrize("breakage", [_break_canary, _misspell_a_container_field, _drop_the_predictor])
def test_schema_validation_rejects_a_broken_inferenceservice(breakage, rendered, crd_errors):
    broken = copy.deepcopy(isvc(rendered("base")))
    assert crd_errors(broken) == []
    breakage(broken)
    assert crd_errors(broken) != []


def test_schema_validation_rejects_a_misspelled_trigger_filter(rendered, crd_errors):
    trigger = copy.deepcopy(of_kind(rendered("base"), "Trigger")[0])
    trigger["spec"]["filter"] = {"attribute": trigger["spec"]["filter"]["attributes"]}
    assert crd_errors(trigger) != []


def test_crd_loader_keys_schemas_by_api_version_and_kind(tmp_path):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": "x.test",
            "names": {"kind": "Thing"},
            "versions": [
                {"name": "v1", "served": True, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v0", "served": False, "schema": {"openAPIV3Schema": {}}},
            ],
        },
    }
    (tmp_path / "thing.yaml").write_text(yaml.safe_dump(crd))
    assert load_crd_schemas(tmp_path) == {("x.test/v1", "Thing"): {"type": "object"}}


# ---------------------------------------------------------------- containers


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_cpu_and_memory_requests_within_limits(target, rendered):
    found = all_containers(rendered(target))
    assert len(found) >= 3
    for where, _, c in found:
        res = c.get("resources", {})
        for resource in ("cpu", "memory"):
            request, limit = res.get("requests", {}).get(resource), res.get("limits", {}).get(resource)
            assert request is not None and limit is not None, f"{where}/{c.get('name')}: {resource} unbounded"
            assert quantity(request) <= quantity(limit), f"{where}: {resource} request above limit"


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_runs_restricted(target, rendered):
    for where, pod, c in all_containers(rendered(target)):
        pod_sc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
        merged = {**pod_sc, **sc}  # Kubernetes: container settings override the pod's
        label = f"{where}/{c.get('name', 'model')}"
        assert merged.get("runAsNonRoot") is True, label
        assert isinstance(merged.get("runAsUser"), int) and merged["runAsUser"] > 0, label
        assert merged.get("seccompProfile", {}).get("type") == "RuntimeDefault", label
        assert sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged"), label
        assert sc.get("readOnlyRootFilesystem") is True, label
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), label
        assert not sc.get("capabilities", {}).get("add"), label
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), label


@pytest.mark.parametrize("target", TARGETS)
def test_read_only_containers_get_a_writable_tmp(target, rendered):
    for where, pod, c in all_containers(rendered(target)):
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert mounts.get("/tmp") in empty_dirs, f"{where}: /tmp is not an emptyDir"


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("target", TARGETS)
def test_no_secret_values_in_rendered_output(target, rendered):
    docs = rendered(target)
    for secret in of_kind(docs, "Secret"):
        values = list(secret.get("stringData", {}).values())
        values += [base64.b64decode(v).decode() for v in secret.get("data", {}).values()]
        assert all(PLACEHOLDER.match(v) for v in values), f"Secret {secret['metadata']['name']} has values"
    leaked = LEAKED.search(yaml.safe_dump_all(docs))
    assert leaked is None, f"{target}: {leaked[0]!r} in the rendered output"
    for config in of_kind(docs, "ConfigMap"):
        assert not [k for k in config.get("data", {}) if CREDENTIAL_NAME.search(k)], config["data"]


def test_no_credentials_in_committed_manifest_files():
    for path in sorted(p for p in MANIFESTS.rglob("*") if p.is_file()):
        match = LEAKED.search(path.read_text())
        assert match is None, f"{path}: {match[0]!r}"
    assert not list(MANIFESTS.rglob(".env")), "no .env files in the repository"


@pytest.mark.parametrize("target", TARGETS)
def test_credentials_reach_containers_only_through_secret_refs(target, rendered):
    docs = rendered(target)
    refs = []
    for where, _, c in all_containers(docs):
        for env in c.get("env", []):
            if CREDENTIAL_NAME.search(env["name"]):
                assert "value" not in env, f"{where}: {env['name']} has a literal value"
                refs.append(env["valueFrom"]["secretKeyRef"])
    assert refs, "the S3 credentials should reach the kfloop containers"
    serving_secrets = {s["name"] for s in named(docs, "ServiceAccount", "kfloop-serving")["secrets"]}
    assert {r["name"] for r in refs} <= serving_secrets
    assert {r["key"] for r in refs} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


# ---------------------------------------------------------------- RBAC


@pytest.mark.parametrize("target", TARGETS)
def test_rbac_is_namespaced_and_has_no_wildcards_or_secrets(target, rendered):
    docs = rendered(target)
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    forbidden = {"*", "secrets", "pods", "pods/exec", "pods/attach", "serviceaccounts/token", "roles", "rolebindings"}
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            words = set(rule.get("apiGroups", [])) | set(rule["resources"]) | set(rule["verbs"])
            assert not words & forbidden, f"Role {role['metadata']['name']}: {words & forbidden}"


@pytest.mark.parametrize("target", TARGETS)
def test_pipeline_role_grants_only_inferenceservice_verbs(target, rendered):
    docs = rendered(target)
    rules = named(docs, "Role", "kfloop-pipeline-deployer")["rules"]
    grants = {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    route = ("gateway.networking.k8s.io", "httproutes", "get")  # a Standard-mode canary's check
    assert grants == {("serving.kserve.io", "inferenceservices", v) for v in DEPLOYER_VERBS} | {route}
    binding = named(docs, "RoleBinding", "kfloop-pipeline-deployer")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kfloop-pipeline-deployer",
    }
    assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("ServiceAccount", "kfloop-pipeline")]


@pytest.mark.parametrize("target", OVERLAYS)
def test_role_bindings_name_existing_roles_and_accounts_in_their_namespace(target, rendered):
    docs = rendered(target)
    for binding in of_kind(docs, "RoleBinding"):
        named(docs, "Role", binding["roleRef"]["name"])
        for subject in binding["subjects"]:
            named(docs, "ServiceAccount", subject["name"])
            assert subject["namespace"] == binding["metadata"]["namespace"]


# ---------------------------------------------------------------- wiring


@pytest.mark.parametrize("target", TARGETS)
def test_references_between_resources_resolve(target, rendered):
    docs = rendered(target)
    for where, pod in [p for d in docs for p in pod_specs(d)]:
        if "serviceAccountName" in pod:
            named(docs, "ServiceAccount", pod["serviceAccountName"])
        for c in containers(pod):
            for source in c.get("envFrom", []):
                named(docs, "ConfigMap", source["configMapRef"]["name"])
            volumes = {v["name"] for v in pod.get("volumes", [])}
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, where


@pytest.mark.parametrize("target", TARGETS)
def test_events_flow_from_transformer_through_broker_to_trigger_service(target, rendered):
    docs = rendered(target)
    binding = named(docs, "SinkBinding", "kfloop-transformer-events")
    assert binding["spec"]["sink"]["ref"]["kind"] == "Broker"
    broker = named(docs, "Broker", binding["spec"]["sink"]["ref"]["name"])["metadata"]["name"]
    transformer_labels = isvc(docs)["spec"]["transformer"].get("labels", {})
    assert binding["spec"]["subject"]["selector"]["matchLabels"].items() <= transformer_labels.items()
    trigger_binding = named(docs, "SinkBinding", "kfloop-trigger-events")  # retrain.started/finished out
    assert trigger_binding["spec"]["sink"]["ref"] == binding["spec"]["sink"]["ref"]
    subject = trigger_binding["spec"]["subject"]
    named(docs, subject["kind"], subject["name"])
    routed = set()
    for trigger in of_kind(docs, "Trigger"):
        assert trigger["spec"]["broker"] == broker
        routed.add(trigger["spec"]["filter"]["attributes"]["type"])
        ref = trigger["spec"]["subscriber"]["ref"]
        service = named(docs, ref["kind"], ref["name"])
        deployment = named(docs, "Deployment", ref["name"])
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        port_names = {
            p.get("name") for c in containers(deployment["spec"]["template"]["spec"]) for p in c.get("ports", [])
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert routed == EVENT_TYPES


def test_a_trigger_routes_each_event_type_the_trigger_service_accepts():
    from kfloop.retraining.policy import SIGNAL_TYPES

    assert set(SIGNAL_TYPES) == EVENT_TYPES


@pytest.mark.parametrize("target", TARGETS)
def test_inferenceservice_runs_in_knative_mode_with_the_drift_transformer(target, rendered):
    service = isvc(rendered(target))
    # KServe 0.20's names (pkg/constants: Knative, Standard; the legacy Serverless, RawDeployment are
    # normalized to them by the webhook); overlays/standard-canary is the one in Standard mode
    mode = "Standard" if target == "overlays/standard-canary" else "Knative"
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    (transformer,) = service["spec"]["transformer"]["containers"]
    assert transformer["command"][-1] == "kfloop.serving.model_servers.transformer"
    assert arg_value(transformer, "--predictor_protocol") in ("v1", "v2")
    assert arg_value(transformer, "--predictor_host") is None, "KServe injects the predictor host"


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "overlays/xgbserver"])
def test_kfloop_predictor_serves_the_bundle_the_storage_initializer_downloads(target, rendered):
    (predictor,) = isvc(rendered(target))["spec"]["predictor"]["containers"]
    assert predictor["name"] == "kserve-container", "KServe injects the storage initializer for this name"
    assert predictor["command"][-1] == "kfloop.serving.model_servers.predictor"
    assert arg_value(predictor, "--model_dir") == "/mnt/models"
    assert (env_value(predictor, "STORAGE_URI") or "").startswith("s3://")


def test_canary_sends_a_fifth_of_traffic_to_a_different_bundle(rendered):
    stable, canary = isvc(rendered("overlays/local-dev")), isvc(rendered("overlays/canary"))
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert "canaryTrafficPercent" not in stable["spec"]["predictor"]
    (stable_predictor,), (canary_predictor,) = (s["spec"]["predictor"]["containers"] for s in (stable, canary))
    stable_uri, canary_uri = env_value(stable_predictor, "STORAGE_URI"), env_value(canary_predictor, "STORAGE_URI")
    assert stable_uri and canary_uri and stable_uri != canary_uri and canary_uri.startswith("s3://")
    assert canary["spec"]["transformer"] == stable["spec"]["transformer"]


def test_the_standard_canary_is_a_spec_canary_entry_kserve_accepts(rendered):
    """What KServe's canary validation checks (inference_service_validation.go validateCanarySpecs):
    Standard mode, a named entry unlike the stable predictor's, percentages summing to at most 100,
    one implementation, no maxReplicas or autoscaling; the stable predictor stays as it was."""
    stable, service = isvc(rendered("overlays/local-dev")), isvc(rendered("overlays/standard-canary"))
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    (entry,) = service["spec"]["canary"]
    assert entry["trafficPercent"] == 20 and entry["predictor"]["name"] not in (
        None,
        "",
        stable["spec"]["predictor"].get("name"),
    )
    assert not {"maxReplicas", "minReplicas", "scaleTarget", "scaleMetric", "autoScaling", "model"} & set(
        entry["predictor"]
    )
    assert service["spec"]["predictor"] == stable["spec"]["predictor"]
    (stable_container,), (canary_container,) = (
        stable["spec"]["predictor"]["containers"],
        entry["predictor"]["containers"],
    )
    assert canary_container["image"] == stable_container["image"] and canary_container["name"] == "kserve-container"
    stable_uri, canary_uri = env_value(stable_container, "STORAGE_URI"), env_value(canary_container, "STORAGE_URI")
    assert stable_uri and canary_uri and stable_uri != canary_uri and canary_uri.startswith("s3://")


def test_xgbserver_overlay_serves_the_booster_on_the_stock_runtime(rendered):
    service = isvc(rendered("overlays/xgbserver"))
    predictor = service["spec"]["predictor"]
    assert "containers" not in predictor
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "xgboost" and model["runtime"] == "kserve-xgbserver"
    # the bundle's stock/ folder: one booster without feature names (kfloop.store.bundle.STOCK_MODEL_FILE)
    assert model["storageUri"].endswith(f"/{STOCK_DIR}/")
    (transformer,) = service["spec"]["transformer"]["containers"]
    assert arg_value(transformer, "--predictor_protocol") == model["protocolVersion"] == "v1"
    assert arg_value(transformer, "--predictor_rows") == "encoded"
    runtime_file = SCHEMAS / "kserve-v0.20.0" / "kserve-xgbserver.yaml"
    if not runtime_file.is_file():
        pytest.skip(f"{runtime_file} not found: cannot compare with the stock runtime")
    runtime = yaml.safe_load(runtime_file.read_text())
    assert runtime["metadata"]["name"] == model["runtime"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_readme_documents_secret_overlays_and_canary():
    readme = (MANIFESTS / "README.md").read_text()
    for needle in [
        "kubectl create secret generic kfloop-s3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "serving.kserve.io/s3-endpoint",
        "canaryTrafficPercent",
        "Knative",
        "deadLetterSink",
        "--prometheus_queries",
        "PodMonitor",
    ]:
        assert needle in readme, needle
    for overlay in OVERLAYS:
        assert f"kubectl apply -k manifests/{overlay}" in readme, overlay


# ---------------------------------------------------------------- the trigger in a pod (issue 10)


def trigger_container(docs: list[dict]) -> dict:
    (container,) = named(docs, "Deployment", "kfloop-trigger")["spec"]["template"]["spec"]["containers"]
    return container


def trigger_args(docs: list[dict]):
    """The rendered trigger arguments, parsed by the service's own parser (unknown flags fail), with the
    environment the ConfigMap gives the pod."""
    from kfloop.config import Settings
    from kfloop.serving.trigger.service import build_parser

    env = named(docs, "ConfigMap", "kfloop-config")["data"]
    container = trigger_container(docs)
    return build_parser(Settings.from_env(env)).parse_args(container["args"]), env


@pytest.mark.parametrize("target", TARGETS)
def test_the_trigger_listens_on_the_pods_address_and_its_port(target, rendered):
    docs = rendered(target)
    args, _ = trigger_args(docs)
    assert args.host == "0.0.0.0", "a pod is reached on its IP: 127.0.0.1 is unreachable for Service and probes"
    (port,) = trigger_container(docs)["ports"]
    assert args.port == port["containerPort"]


@pytest.mark.parametrize("target", TARGETS)
def test_triggers_retry_with_backoff_then_dead_letter_to_the_trigger_service(target, rendered):
    from kfloop.names import TRIGGER_DEAD_LETTERS_PATH

    docs = rendered(target)
    for trigger in of_kind(docs, "Trigger"):
        delivery = trigger["spec"]["delivery"]
        assert delivery["retry"] >= 3 and delivery["backoffPolicy"] == "exponential"
        assert re.fullmatch(r"PT[0-9.]+S", delivery["backoffDelay"])
        sink = delivery["deadLetterSink"]
        assert sink["ref"] == trigger["spec"]["subscriber"]["ref"] and sink["uri"] == TRIGGER_DEAD_LETTERS_PATH


@pytest.mark.parametrize("target", TARGETS)
def test_the_served_pods_expose_metrics_for_the_canary_analysis(target, rendered):
    annotations = isvc(rendered(target))["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"


def test_the_base_trigger_has_no_kubernetes_token_and_no_rollout(rendered):
    docs = rendered("base")
    args, _ = trigger_args(docs)
    assert args.auto_rollout is None
    pod = named(docs, "Deployment", "kfloop-trigger")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert not [r for r in named(docs, "Role", "kfloop-trigger")["rules"] if "inferenceservices" in r["resources"]]


def test_the_auto_rollout_overlay_turns_the_analysed_rollout_on(rendered):
    from kfloop.config import Settings
    from kfloop.rollout.sources import PrometheusSource
    from kfloop.serving.trigger.rollout_flags import rollout_options

    docs = rendered("overlays/auto-rollout")
    args, env = trigger_args(docs)
    assert (args.auto_rollout, args.rollout_target, args.prometheus_queries) == ("canary", "kubernetes", "knative")
    assert args.prometheus_url == env["KFLOOP_PROMETHEUS_URL"] == Settings.from_env(env).prometheus_url
    rollout_options(args).check_source()  # what the trigger checks at start-up
    pod = named(docs, "Deployment", "kfloop-trigger")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True  # KubernetesTarget needs the API token
    role = named(docs, "Role", "kfloop-trigger-rollout")
    assert [(r["apiGroups"], r["resources"]) for r in role["rules"]] == [
        (["serving.kserve.io"], ["inferenceservices"]),
        (["gateway.networking.k8s.io"], ["httproutes"]),  # get: a Standard-mode canary's check
    ]
    binding = named(docs, "RoleBinding", "kfloop-trigger-rollout")
    assert binding["roleRef"]["name"] == "kfloop-trigger-rollout"
    assert [s["name"] for s in binding["subjects"]] == ["kfloop-trigger"]
    (monitor,) = of_kind(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == named(docs, "Deployment", "kfloop-trigger")["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "aggr-metric" and endpoint["path"] == "/metrics"  # KServe's aggregated metrics port
    # the revision label the queries select by is the one the PodMonitor adds (Prometheus-sanitized)
    revision_labels = {re.sub(r"[^a-zA-Z0-9_]", "_", label) for label in monitor["spec"]["podTargetLabels"]}
    default_label = PrometheusSource("http://prometheus:9090", "ns").revision_label
    assert default_label in revision_labels
    selected = monitor["spec"]["selector"]["matchExpressions"]
    assert {"key": "serving.kserve.io/inferenceservice", "operator": "Exists"} in selected


# ---------------------------------------------------------------- who may reach the trigger (issue 9)


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_brokers_namespace_and_kfloops_pods_reach_the_trigger(target, rendered):
    docs = rendered(target)
    (policy,) = of_kind(docs, "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    deployment = named(docs, "Deployment", "kfloop-trigger")
    assert policy["metadata"].get("namespace") == deployment["metadata"].get("namespace")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items() and set(selector) == {"app.kubernetes.io/name"}
    assert not [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        and d is not deployment
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open: S3, the KFP API, the broker
    (rule,) = policy["spec"]["ingress"]
    (port,) = trigger_container(docs)["ports"]
    assert rule["ports"] == [{"port": port["name"], "protocol": "TCP"}]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "knative-eventing"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "kfloop"}}},
    ]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of a container env value."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def test_the_oidc_overlay_admits_exactly_the_triggers_service_accounts(rendered, crd_errors):
    from kfloop.config import Settings
    from kfloop.serving.trigger.service import build_parser

    docs = rendered("overlays/oidc")
    deployment = named(docs, "Deployment", "kfloop-trigger")
    namespace = deployment["metadata"]["namespace"]
    container = trigger_container(docs)
    pod = {"POD_NAMESPACE": namespace}  # the downward API's value
    (fieldref,) = [e for e in container["env"] if e["name"] == "POD_NAMESPACE"]
    assert fieldref["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    env = {**named(docs, "ConfigMap", "kfloop-config")["data"]}
    env.update({e["name"]: expand(e["value"], pod) for e in container["env"] if "value" in e})
    args = build_parser(Settings.from_env(env)).parse_args(container["args"])
    assert args.oidc_issuer.startswith("https://") and args.oidc_jwks_url.endswith("/openid/v1/jwks")
    triggers = of_kind(docs, "Trigger")
    for trigger in triggers:
        assert crd_errors(trigger) == []  # spec.subscriber.audience is Knative's field
        assert trigger["spec"]["subscriber"]["audience"] == args.oidc_audience
        assert trigger["spec"]["delivery"]["deadLetterSink"]["audience"] == args.oidc_audience
    # Knative's name for a Trigger's OIDC service account (knative.dev/eventing pkg/auth, kmeta.ChildName)
    expected = {
        f"system:serviceaccount:{namespace}:{t['metadata']['name']}-oidc-eventing.knative.dev-trigger" for t in triggers
    }
    assert set(args.oidc_subjects.split(",")) == expected
    assert all(len(s.rsplit(":", 1)[1]) <= 63 for s in expected)  # longer names would be hashed by Knative
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    folder = os.path.dirname(str(args.oidc_jwks_ca_file))
    assert folder == os.path.dirname(str(args.oidc_jwks_token_file)) and mounts[folder] == "oidc-jwks-access"
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "oidc-jwks-access"]
    sources = volume["projected"]["sources"]
    assert {"path": "token", "expirationSeconds": 3600} == sources[0]["serviceAccountToken"]
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False  # no API credentials

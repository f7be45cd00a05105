"""Offline checks of hack/e2e-kind.sh, the end-to-end run on kind that cannot run here (no Docker or
cluster): it parses (``bash -n``) and is shellcheck-clean, its ``--dry-run`` plan lists every step in
order with every pinned version and runs nothing, every manifest it applies renders and validates
against the CRD schemas, and the image it builds runs as a non-root user with a lean build context."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from kfloop.config import DEFAULT_IMAGE
from tests.conftest import REPO
from tests.fakes.manifests import SCHEMAS, of_kind, render, schema_errors

pytestmark = pytest.mark.processes  # runs bash, shellcheck and kubectl

SCRIPT = REPO / "hack" / "e2e-kind.sh"
OVERLAY = REPO / "hack" / "e2e-kind"

# The loop's steps, in the order the issue names them, after the installs.
STEPS = [
    "create the kind cluster",
    "install cert-manager",
    "install Knative Serving",
    "install Knative Eventing",
    "install KServe",
    "install Kubeflow Pipelines",
    "install Prometheus Operator",
    "build the image",
    "create the S3 Secret",
    "apply hack/e2e-kind",
    "train and deploy v1",
    "send traffic",
    "inject data drift",
    "drift event",
    "KFP run",
    "new version",
    "analysed canary",
    "promoted",
]
PINS = {
    "KIND_VERSION": r"v\d+\.\d+\.\d+",
    "KIND_NODE_IMAGE": r"kindest/node:v\d+\.\d+\.\d+",
    "CERT_MANAGER_VERSION": r"v\d+\.\d+\.\d+",
    "KNATIVE_SERVING_VERSION": r"knative-v\d+\.\d+\.\d+",
    "KNATIVE_KOURIER_VERSION": r"knative-v\d+\.\d+\.\d+",
    "KNATIVE_EVENTING_VERSION": r"knative-v\d+\.\d+\.\d+",
    "KSERVE_VERSION": r"v0\.20\.0",
    "KFP_VERSION": r"2\.\d+\.\d+",
    "PROMETHEUS_OPERATOR_VERSION": r"v\d+\.\d+\.\d+",
}


def pins() -> dict[str, str]:
    """The pinned versions of the script's variables block: NAME=${NAME:-value}."""
    found = dict(re.findall(r"^([A-Z_]+_(?:VERSION|IMAGE))=\$\{\1:-([^}]+)\}", SCRIPT.read_text(), re.M))
    return found


def dry_run(**env) -> subprocess.CompletedProcess:
    # A PATH without docker, kind or kubectl: a dry run must not need (or call) any of them.
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=60, env=clean, check=False
    )


def test_the_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_installed_version_is_pinned_in_one_block():
    found = pins()
    assert set(found) == set(PINS), f"pinned: {sorted(found)}"
    for name, pattern in PINS.items():
        assert re.fullmatch(pattern, found[name]), f"{name}={found[name]!r} is not a pinned version"
    # Nothing installed from a moving ref: no "latest", no main/master branch.
    text = SCRIPT.read_text()
    assert not re.search(r"releases/latest|ref=(main|master)\b|:latest\b", text)


def test_dry_run_lists_every_step_in_order_and_runs_nothing():
    result = dry_run()
    assert result.returncode == 0, result.stderr
    headers = re.findall(r"^==> \[(\d+)/(\d+)\] (.*)$", result.stdout, re.M)
    assert [int(n) for n, _, _ in headers] == list(range(1, len(STEPS) + 1))
    assert {total for _, total, _ in headers} == {str(len(STEPS))}
    for (_, _, text), expected in zip(headers, STEPS):
        assert text.startswith(expected), f"step {text!r}, expected {expected!r}"
    # Every step prints its commands or its waits; the loop's steps each wait for what they name.
    blocks = re.split(r"^==> .*$", result.stdout, flags=re.M)[1:]
    assert all(re.search(r"^(\+ |  wait: )", b, re.M) for b in blocks)
    for name in ("drift event", "KFP run", "new version", "analysed canary", "promoted"):
        block = blocks[STEPS.index(name)]
        assert "  wait: " in block, f"step {name!r} waits for nothing"
    assert "e2e passed" in result.stdout


def test_dry_run_names_every_pinned_version_and_the_real_install_urls():
    out = dry_run().stdout
    found = pins()
    for name, value in found.items():
        assert value in out, f"{name}={value} not in the plan"
    assert f"cert-manager/cert-manager/releases/download/{found['CERT_MANAGER_VERSION']}/cert-manager.yaml" in out
    for f in ("serving-crds.yaml", "serving-core.yaml"):
        assert f"knative/serving/releases/download/{found['KNATIVE_SERVING_VERSION']}/{f}" in out
    assert f"net-kourier/releases/download/{found['KNATIVE_KOURIER_VERSION']}/kourier.yaml" in out
    for f in ("eventing-crds.yaml", "eventing-core.yaml", "in-memory-channel.yaml", "mt-channel-broker.yaml"):
        assert f"knative/eventing/releases/download/{found['KNATIVE_EVENTING_VERSION']}/{f}" in out
    for f in ("kserve.yaml", "kserve-cluster-resources.yaml"):
        assert f"kserve/kserve/releases/download/{found['KSERVE_VERSION']}/{f}" in out
    assert f"manifests/kustomize/env/platform-agnostic\\?ref={found['KFP_VERSION']}" in out
    assert f"kind create cluster --name kfloop-e2e --image {found['KIND_NODE_IMAGE']}" in out
    assert f"docker build -f {REPO}/components/Dockerfile -t {DEFAULT_IMAGE}" in out
    assert f"kind load docker-image {DEFAULT_IMAGE}" in out
    assert f"kubectl apply -k {REPO}/hack/e2e-kind" in out
    assert re.search(r"kfloop pipeline submit .*--wait", out)
    assert "--age-shift 15" in out  # the demo's data drift


def test_overrides_reach_the_plan_and_no_secret_is_printed():
    out = dry_run(KSERVE_VERSION="v0.20.0", KFP_VERSION="2.17.2").stdout
    assert "ref=2.17.2" in out
    assert "AWS_SECRET_ACCESS_KEY=***" in out
    assert "minio123" not in out


def test_unknown_arguments_are_refused():
    result = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "error: unknown argument '--frobnicate'" in result.stderr


# ---------------------------------------------------------------- what the script applies


def test_the_e2e_overlay_renders_and_validates_against_the_crds():
    if not SCHEMAS.is_dir():
        pytest.skip(f"reference CRD schemas not found at {SCHEMAS}")
    docs = render(OVERLAY)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] not in {"Namespace"}} == {"kubeflow"}
    checked = 0
    for doc in docs:
        if doc["kind"] in {"InferenceService", "Trigger", "SinkBinding", "Broker"}:
            assert schema_errors(doc) == [], f"{doc['kind']} {doc['metadata']['name']}"
            checked += 1
    assert checked >= 6  # the InferenceService, the Broker, three Triggers, two SinkBindings
    (isvc,) = of_kind(docs, "InferenceService")
    for part in ("predictor", "transformer"):
        (container,) = isvc["spec"][part]["containers"]
        assert container["image"] == DEFAULT_IMAGE
        assert container["resources"]["requests"]["cpu"] == "100m"
    (trigger,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "kfloop-trigger"]
    args = trigger["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--auto_rollout") + 1] == "canary"
    assert args[-2:] == ["--rollout_hold_seconds", "60"]  # argparse keeps the last one
    binding = [d for d in of_kind(docs, "RoleBinding") if d["metadata"]["name"].endswith("pipeline-runner")]
    assert binding and binding[0]["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]
    assert binding[0]["roleRef"]["name"] == "kfloop-pipeline-deployer"


def test_the_prometheus_the_analysis_reads_is_where_the_overlay_points():
    import yaml

    docs = [d for d in yaml.safe_load_all((OVERLAY / "prometheus.yaml").read_text()) if d]
    (prom,) = [d for d in docs if d["kind"] == "Prometheus"]
    # The operator's governing Service is prometheus-operated in the Prometheus's namespace.
    rendered = render(OVERLAY)
    (config,) = [d for d in of_kind(rendered, "ConfigMap") if d["metadata"]["name"] == "kfloop-config"]
    url = config["data"]["KFLOOP_PROMETHEUS_URL"]
    assert url == f"http://prometheus-operated.{prom['metadata']['namespace']}.svc.cluster.local:9090"
    assert prom["spec"]["podMonitorSelector"] == {} and prom["spec"]["podMonitorNamespaceSelector"] == {}


def test_the_traffic_helper_refuses_bad_values():
    import sys

    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "e2e_traffic.py"),
            "--url",
            "http://127.0.0.1:9",
            "--host",
            "h",
            "--seconds",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "error: --seconds" in result.stderr


# ---------------------------------------------------------------- the image


def test_the_dockerfile_is_multi_stage_and_runs_as_non_root():
    text = (REPO / "components" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "not a multi-stage build"
    assert re.search(r"^COPY --from=" + re.escape(stages[0][1]) + r"\s", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid not in {"0", "root"} and uid.isdigit(), f"the last USER is {users[-1]!r}"
    # The manifests' securityContext runs every container as that uid.
    assert f"runAsUser: {uid}" in (REPO / "manifests" / "base" / "deployment-trigger.yaml").read_text()


def test_the_dockerignore_keeps_local_state_out_of_the_build_context():
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".kfloop"} <= patterns
    assert not any(p.startswith("!") for p in patterns)


def test_the_compiled_pipelines_and_manifests_default_to_the_published_image():
    assert DEFAULT_IMAGE == "ghcr.io/kfloop/kfloop:0.1.0"
    for name in ("training.yaml", "batch.yaml"):
        images = set(re.findall(r"image:\s*(\S+)", (REPO / "pipelines" / name).read_text()))
        assert images == {DEFAULT_IMAGE}, f"{name}: {images}"
    images = set()
    for path in (REPO / "manifests").rglob("*.yaml"):
        images |= set(re.findall(r"^\s*(?:image|newName):\s*(\S+)", path.read_text(), re.M))
    assert images and all(i.startswith("ghcr.io/kfloop/kfloop") for i in images), images

"""RBAC: every Kubernetes API call the cluster code paths make, recorded by the fake API server, is
allowed by the Role of the account that makes it in manifests/, and the Roles grant nothing more.

- the pipeline's deploy step (``kfloop.components.deploy``, ServiceAccount ``kfloop-pipeline``, Role
  ``kfloop-pipeline-deployer`` of the base);
- the trigger's automatic rollout (ServiceAccount ``kfloop-trigger``, Role ``kfloop-trigger-rollout`` of
  ``overlays/auto-rollout``): the calls ``kfloop.rollout.controller`` makes through the target
  (``rollout.deploy`` of a first version and of each canary step, ``status``, ``promote``, ``rollback``);
  and, for ``--auto_rollout blue-green``, the shadow calls (``shadow``: the candidate's own
  InferenceService created, waited for, deleted) the trigger's Role must allow too, while the deploy
  step's Role has no delete.

Each records a Knative-mode service's rollout and a Standard-mode one's (``spec.canary``, checked
against the HTTPRoute KServe writes; the fake plays a KServe with kserve#5912).
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from kfloop.rollout import actions as rollout
from kfloop.rollout.targets import isvc_template
from kfloop.rollout.targets.isvc_status import MODE_ANNOTATION, MODEL_VERSION, STABLE_VERSION
from kfloop.rollout.targets.kubernetes import KubernetesTarget
from kfloop.store.objects import open_store
from tests.fakes.kube_api import NS, FakeKubeAPI, use_kubeconfig

STANDARD_NS = "kfloop-standard"

pytestmark = pytest.mark.processes  # kubectl kustomize; the fake API server on 127.0.0.1

PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?$"
)


def api_calls(fake: FakeKubeAPI) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every recorded request, as the API server's authorizer sees it."""
    calls = set()
    for request in fake.requests:
        match = PATH.match(urlsplit(request["path"]).path)
        assert match, f"a request the RBAC check does not know: {request['method']} {request['path']}"
        named = match["name"] is not None
        verb = {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch", "PUT": "update"}.get(
            request["method"], request["method"].lower()
        )
        calls.add((match["group"], match["resource"], verb))
    return calls


def granted(role: dict) -> set[tuple[str, str, str]]:
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def role(target: str, name: str) -> dict:
    from tests.fakes.manifests import MANIFESTS, named, render

    return named(render(MANIFESTS / target), "Role", name)


@pytest.fixture
def fake():
    server = FakeKubeAPI()
    yield server
    server.close()


def serve_in_standard_mode(registry, fake: FakeKubeAPI, version: int = 1) -> None:
    """churn:<version> on an InferenceService in Standard mode in STANDARD_NS, applied by its owner; from
    then on the fake's controller reconciles before every read (the rollout waits for the canary)."""
    record = registry.get("churn", version)
    notes = {MODE_ANNOTATION: "Standard", MODEL_VERSION: str(version), STABLE_VERSION: str(version)}
    fake.apply(
        isvc_template.inferenceservice("churn", STANDARD_NS, record.bundle_uri, notes, version=str(version)),
        STANDARD_NS,
    )
    fake.reconcile("churn", STANDARD_NS)
    fake.auto_reconcile, fake.canary_start_reconciles = True, 1


def test_the_deploy_step_calls_exactly_what_its_role_grants(registry, fake, s3_settings, tmp_path, monkeypatch):  # noqa: F811
    from kfloop.components.deploy import deploy

    use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
    for key, value in s3_settings.storage_env().items():
        monkeypatch.setenv(key, value)
    deploy("churn:1", "kubernetes", 10, "", "unused")  # creates
    fake.reconcile("churn")
    deploy("churn:2", "kubernetes", 10, NS, "unused")  # patches a canary
    serve_in_standard_mode(registry, fake)
    deploy("churn:3", "kubernetes", 10, STANDARD_NS, "unused")  # a Standard-mode canary, checked
    assert fake.objects[(STANDARD_NS, "churn")]["spec"]["canary"][0]["trafficPercent"] == 10
    assert api_calls(fake) == granted(role("base", "kfloop-pipeline-deployer"))


def test_the_triggers_automatic_rollout_calls_exactly_what_its_role_grants(registry, fake, s3_settings):  # noqa: F811
    store = open_store(s3_settings)
    target = KubernetesTarget(namespace=NS, api=fake.api())
    rollout.deploy(registry, target, "churn:1")  # all-at-once / the first version: create
    fake.reconcile("churn")
    for percent in (10, 50):  # the controller's steps
        rollout.deploy(registry, target, "churn:2", percent)
        fake.reconcile("churn")
        target.status("churn")
    rollout.promote(registry, target, "churn")
    fake.reconcile("churn")
    rollout.deploy(registry, target, "churn:3", 10)
    fake.reconcile("churn")
    rollout.rollback(registry, target, "churn")
    serve_in_standard_mode(registry, fake)  # v1 (archived) stable, v2 (production) as its canary
    standard = KubernetesTarget(namespace=STANDARD_NS, api=fake.api(), poll_seconds=0.01)
    for step in (10, 50):
        rollout.deploy(registry, standard, "churn:2", step)
        standard.status("churn")
    rollout.promote(registry, standard, "churn")
    # blue-green: the candidate at 0% with a shadow InferenceService the transformer mirrors to, then the
    # switch; the shadow goes when the analysis ends (promoted here, rolled back the same way)
    blue_green = KubernetesTarget(
        namespace=NS, api=fake.api(), poll_seconds=0, sleep=lambda _: fake.reconcile("churn-shadow"), store=store
    )
    record = registry.get("churn", 3)
    registry.set_stage("churn", 3, "staging", reason="again, as blue-green")
    rollout.deploy(registry, blue_green, "churn:3", 0)
    fake.reconcile("churn")
    assert blue_green.shadow("churn", 3, 100, record=record)["shadow"]["isvc"] == "churn-shadow"
    blue_green.shadow("churn", None, 0)
    rollout.promote(registry, blue_green, "churn")
    assert (NS, "churn-shadow") not in fake.objects
    calls = api_calls(fake)
    assert calls == granted(role("overlays/auto-rollout", "kfloop-trigger-rollout"))
    assert ("serving.kserve.io", "inferenceservices", "delete") not in granted(role("base", "kfloop-pipeline-deployer"))
    base_trigger = role("base", "kfloop-trigger")  # the base trigger has no Kubernetes API rights
    assert not {c for c in granted(base_trigger) if c[0] == "serving.kserve.io"}


def test_a_role_missing_a_verb_the_code_calls_is_caught(registry, fake):  # noqa: F811
    target = KubernetesTarget(namespace=NS, api=fake.api())
    rollout.deploy(registry, target, "churn:1")
    fake.reconcile("churn")
    rollout.deploy(registry, target, "churn:2", 20)
    narrowed = json.loads(json.dumps(role("base", "kfloop-pipeline-deployer")))
    narrowed["rules"][0]["verbs"] = ["get", "create"]
    assert api_calls(fake) - granted(narrowed) == {("serving.kserve.io", "inferenceservices", "patch")}


def test_shadow_on_kubernetes_from_the_cli_creates_and_deletes_the_shadow(
    registry, fake, capsys, tmp_path, monkeypatch, s3_settings
):  # noqa: F811
    from kfloop.cli.main import main

    use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
    for key, value in s3_settings.storage_env().items():
        monkeypatch.setenv(key, value)
    KubernetesTarget(namespace=NS, api=fake.api()).deploy(registry.get("churn", 1), None)
    fake.reconcile("churn")
    fake.auto_reconcile = True  # the shadow InferenceService gets ready as the CLI waits for it
    args = ["--home", str(tmp_path / "home"), "rollout", "shadow", "churn:2", "--target", "kubernetes", "--json"]
    assert main([*args, "--percent", "50"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["shadow"]["version"] == 2 and shown["shadow"]["percent"] == 50
    assert shown["shadow"]["url"] == f"http://churn-shadow-predictor.{NS}.svc.cluster.local"
    assert (NS, "churn-shadow") in fake.objects
    assert main([*args, "--percent", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["shadow"] is None
    assert (NS, "churn-shadow") not in fake.objects
    assert {c[2] for c in api_calls(fake)} == {"get", "create", "delete"}

"""``KubernetesTarget.shadow`` against the recording fake API server: the candidate's own predictor-only
InferenceService (valid against KServe v0.20.0's CRD), the mirror state written once it is ready, and
both removed at 0%; a candidate that never gets ready is deleted again and nothing is mirrored."""

from __future__ import annotations

import pytest

from kfloop.errors import RegistryError
from kfloop.names import shadow_isvc_name
from kfloop.rollout import actions as rollout
from kfloop.rollout.mirror import read_state
from kfloop.rollout.targets.isvc_template import SHADOW_OF_LABEL, storage_uri
from kfloop.rollout.targets.kubernetes import KubernetesTarget
from kfloop.store.objects import open_store
from tests.fakes.kube_api import NS, FakeKubeAPI
from tests.fakes.manifests import schema_errors


@pytest.fixture
def fake():
    server = FakeKubeAPI()
    yield server
    server.close()


@pytest.fixture
def store(s3_settings):
    return open_store(s3_settings)


def _target(fake, store, **kw) -> KubernetesTarget:
    kw.setdefault("sleep", lambda _: fake.reconcile("churn-shadow"))
    return KubernetesTarget(namespace=NS, api=fake.api(), poll_seconds=0, store=store, **kw)


def test_shadow_runs_the_candidate_as_its_own_predictor_only_service_and_writes_the_mirror_state(registry, fake, store):
    target = _target(fake, store)
    rollout.deploy(registry, target, "churn:1")
    fake.reconcile("churn")
    main_before = fake.objects[(NS, "churn")]["spec"]
    status = target.shadow("churn", 2, 30, record=registry.get("churn", 2))
    shadow = fake.objects[(NS, "churn-shadow")]
    assert schema_errors({k: v for k, v in shadow.items() if k != "status"}) == []
    assert set(shadow["spec"]) == {"predictor"}  # no transformer, no canary
    predictor = shadow["spec"]["predictor"]
    assert storage_uri(predictor) == registry.get("churn", 2).bundle_uri
    args = predictor["containers"][0]["args"]
    assert args[args.index("--model_name") + 1] == "churn"  # the path the transformer posts to
    assert args[args.index("--model_version") + 1] == "2"
    assert shadow["metadata"]["labels"][SHADOW_OF_LABEL] == "churn"
    assert shadow["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert fake.objects[(NS, "churn")]["spec"] == main_before  # the main service is not touched
    state = read_state(store, "churn")
    assert (state.version, state.percent, state.isvc, state.namespace) == (2, 30, "churn-shadow", NS)
    assert state.url == f"http://churn-shadow-predictor.{NS}.svc.cluster.local"  # the reported address
    assert status["shadow"]["version"] == 2 and status["stable"]["version"] == 1
    # another version: the same service patched, the state follows
    target.shadow("churn", 3, 100, record=registry.get("churn", 3))
    assert storage_uri(fake.objects[(NS, "churn-shadow")]["spec"]["predictor"]) == registry.get("churn", 3).bundle_uri
    assert read_state(store, "churn").version == 3
    assert target.shadow("churn", None, 0)["shadow"] is None
    assert (NS, "churn-shadow") not in fake.objects and read_state(store, "churn") is None
    assert target.shadow("churn", None, 0)["shadow"] is None  # stopping twice is fine


def test_a_shadow_that_never_gets_ready_is_deleted_and_nothing_is_mirrored(registry, fake, store):
    ticks = iter(range(1000))
    target = _target(fake, store, sleep=lambda _: None, clock=lambda: next(ticks), canary_timeout=5)
    rollout.deploy(registry, target, "churn:1")
    fake.reconcile("churn")
    with pytest.raises(RegistryError, match="churn-shadow .* did not become ready within 5s"):
        target.shadow("churn", 2, 50, record=registry.get("churn", 2))
    assert (NS, "churn-shadow") not in fake.objects and read_state(store, "churn") is None


def test_shadow_needs_a_deployed_model_and_a_valid_derived_name(registry, fake, store):
    target = _target(fake, store)
    with pytest.raises(RegistryError, match="InferenceService churn does not exist"):
        target.shadow("churn", 2, 50, record=registry.get("churn", 2))
    assert fake.writes() == []
    assert shadow_isvc_name("churn") == "churn-shadow"
    for bad in ("a" * 41, "Churn", "1churn"):
        with pytest.raises(RegistryError, match="cannot have a shadow"):
            shadow_isvc_name(bad)

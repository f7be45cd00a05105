"""Canaries of InferenceServices in KServe's Standard mode (``spec.canary``), against the fake
Kubernetes API server playing three KServe releases (``FakeKubeAPI.kserve``, see its
``_reconcile_standard`` for what the fake controller does, from KServe's predictor and HTTPRoute
reconcilers):

- ``main``: kserve#5912 and #5984: a canary's Deployment, ``status.canaryStatuses``, and weighted
  backendRefs in the HTTPRoutes ``{isvc}-predictor`` and ``{isvc}`` once the canary is ready;
- ``0.20``: the canary's Deployment and status, but unweighted HTTPRoutes (no traffic to it);
- ``0.19``: a CRD without ``spec.canary``, which the API server prunes from every write.

The fake's controller runs before every read of the InferenceService (``auto_reconcile``), so the
target sees a canary that is not ready yet (its pods start after ``canary_start_reconciles``
reconciles) and, on ``main``, an HTTPRoute without the canary until then.
"""

from __future__ import annotations

import pytest

from kfloop.errors import ConfigError, RegistryError
from kfloop.rollout import actions as rollout
from kfloop.rollout.factory import RolloutOptions, make_source, make_target
from kfloop.rollout.sources import PrometheusSource, Side
from kfloop.rollout.targets import isvc_template
from kfloop.rollout.targets.isvc_status import MODE_ANNOTATION, MODEL_VERSION, STABLE_VERSION
from kfloop.rollout.targets.kubernetes import KubernetesTarget, route_share
from tests.fakes.kube_api import NS, FakeKubeAPI, use_kubeconfig
from tests.fakes.prometheus import FakePrometheus, sample

ROUTE_GET = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/churn-predictor"


@pytest.fixture
def fake():
    server = FakeKubeAPI()
    server.auto_reconcile = True
    yield server
    server.close()


def _target(fake: FakeKubeAPI, **options) -> KubernetesTarget:
    timing = {"poll_seconds": 0.005, "route_grace": 0.1, "canary_timeout": 2.0, **options}
    return KubernetesTarget(namespace=NS, api=fake.api(), **timing)


@pytest.fixture
def target(fake) -> KubernetesTarget:
    return _target(fake)


@pytest.fixture
def crd_errors():
    """``crd_errors(obj)``: violations of the strict KServe v0.20 CRD schema (skips where absent)."""
    from tests.fakes.manifests import SCHEMAS, schema_errors

    if not SCHEMAS.is_dir():
        pytest.skip(f"reference CRD schemas not found at {SCHEMAS} (expected beside the repository)")
    return schema_errors


def _serve_v1_in_standard_mode(registry, fake: FakeKubeAPI) -> dict:
    """churn:1 served by an InferenceService in Standard mode, applied by its owner (kubectl apply)."""
    record = registry.get("churn", 1)
    notes = {MODE_ANNOTATION: "Standard", MODEL_VERSION: "1", STABLE_VERSION: "1"}
    obj = fake.apply(isvc_template.inferenceservice("churn", NS, record.bundle_uri, notes, version="1"))
    registry.set_stage("churn", 1, "production", reason="applied")
    fake.reconcile("churn")
    return obj


def _isvc(fake: FakeKubeAPI) -> dict:
    return fake.objects[(NS, "churn")]


def _backends(fake: FakeKubeAPI, route: str = "churn-predictor") -> list[tuple[str, int | None]]:
    (rule,) = fake.routes[(NS, route)]["spec"]["rules"]
    return [(ref["name"], ref.get("weight")) for ref in rule["backendRefs"]]


def _stages(registry) -> dict[int, str]:
    return {r.version: r.stage for r in registry.list_versions("churn")}


def _shares(status: dict) -> tuple:
    return tuple((status[k] or {}).get("version") for k in ("stable", "canary")), tuple(
        (status[k] or {}).get("percent") for k in ("stable", "canary")
    )


def _env(predictor: dict) -> str:
    return isvc_template.storage_uri(predictor)


# ---------------------------------------------------------------- a KServe that routes canaries (#5912)


def test_a_canary_is_written_waited_for_and_kept_where_the_httproute_splits_traffic(registry, target, fake, crd_errors):
    _serve_v1_in_standard_mode(registry, fake)
    fake.canary_start_reconciles = 4  # the canary's pods take a few reconciles to start
    status = rollout.deploy(registry, target, "churn:2", canary_percent=20)

    (entry,) = _isvc(fake)["spec"]["canary"]
    assert entry["trafficPercent"] == 20 and entry["predictor"]["name"] == "v2"
    assert _env(entry["predictor"]) == registry.get("churn", 2).bundle_uri
    args = entry["predictor"]["containers"][0]["args"]
    assert args[args.index("--model_version") + 1] == "2"
    assert not {"minReplicas", "maxReplicas"} & set(entry["predictor"])  # KServe runs canaries with fixed replicas
    assert "canaryTrafficPercent" not in _isvc(fake)["spec"]["predictor"]
    assert _env(_isvc(fake)["spec"]["predictor"]) == registry.get("churn", 1).bundle_uri  # stable untouched
    assert crd_errors(_isvc(fake)) == []

    # the route was read only once the controller reported the canary ready, and it splits 80/20
    paths = [r["path"] for r in fake.requests]
    patch = next(i for i, r in enumerate(fake.requests) if r["method"] == "PATCH")
    assert paths.index(ROUTE_GET) > patch + fake.canary_start_reconciles - 1
    assert _backends(fake) == [("churn-predictor", 80), ("churn-v2-predictor", 20)]
    assert _shares(status) == ((1, 2), (80, 20)) and status["ready"] is True
    assert status["deployment_mode"] == "Standard" and status["revision_label"] == "app"
    assert [(r["tag"], r["version"], r["revision"], r["percent"]) for r in status["revisions"]] == [
        ("stable", 1, "isvc.churn-predictor", 80),
        ("canary", 2, "isvc.churn-v2-predictor", 20),
    ]
    assert status["canary_bypasses_transformer"] is True  # the top-level route splits transformer / canary
    assert _backends(fake, "churn") == [("churn-transformer", 80), ("churn-v2-predictor", 20)]
    assert _stages(registry) == {1: "production", 2: "staging", 3: "staging"}

    rollout.deploy(registry, target, "churn:2", canary_percent=50)  # the analysis' next step
    assert _backends(fake) == [("churn-predictor", 50), ("churn-v2-predictor", 50)]
    assert _shares(target.status("churn")) == ((1, 2), (50, 50))


def test_promote_makes_the_canary_the_predictor_and_keeps_its_deployment(registry, target, fake, crd_errors):
    _serve_v1_in_standard_mode(registry, fake)
    rollout.deploy(registry, target, "churn:2", canary_percent=20)
    started = fake.deployments[(NS, "churn-v2-predictor")]
    status = rollout.promote(registry, target, "churn")

    spec = _isvc(fake)["spec"]
    assert "canary" not in spec and spec["predictor"]["name"] == "v2"
    assert _env(spec["predictor"]) == registry.get("churn", 2).bundle_uri
    assert (spec["predictor"]["minReplicas"], spec["predictor"]["maxReplicas"]) == (1, 3)  # the stable's
    assert crd_errors(_isvc(fake)) == []
    fake.reconcile("churn")
    assert fake.deployments[(NS, "churn-v2-predictor")] > started  # the same Deployment: no restart
    assert (NS, "churn-predictor") not in fake.deployments  # the old stable one is cleaned up
    assert _backends(fake) == [("churn-v2-predictor", None)]  # the route keeps its name
    assert _shares(status) == ((2, None), (100, None))
    assert not any(c["type"] == "CanaryPredictorReady" for c in _isvc(fake)["status"]["conditions"])
    assert _stages(registry) == {1: "archived", 2: "production", 3: "staging"}

    rollout.deploy(registry, target, "churn:3", canary_percent=10)  # the next canary splits with v2
    assert _backends(fake) == [("churn-v2-predictor", 90), ("churn-v3-predictor", 10)]
    assert [r["revision"] for r in target.status("churn")["revisions"]] == [
        "isvc.churn-v2-predictor",
        "isvc.churn-v3-predictor",
    ]


def test_rollback_removes_the_canary_entry_and_rejects_it(registry, target, fake):
    _serve_v1_in_standard_mode(registry, fake)
    rollout.deploy(registry, target, "churn:2", canary_percent=20)
    status = rollout.rollback(registry, target, "churn")
    assert "canary" not in _isvc(fake)["spec"] and "name" not in _isvc(fake)["spec"]["predictor"]
    assert _shares(status) == ((1, None), (100, None)) and status["rolled_back_version"] == 2
    fake.reconcile("churn")
    assert _backends(fake) == [("churn-predictor", None)]
    assert (NS, "churn-v2-predictor") not in fake.deployments
    assert _stages(registry) == {1: "production", 2: "rejected", 3: "staging"}
    with pytest.raises(RegistryError, match="no canary"):
        rollout.rollback(registry, target, "churn")


def test_a_full_deploy_in_standard_mode_replaces_the_stable_bundle_and_ends_a_canary(registry, target, fake):
    _serve_v1_in_standard_mode(registry, fake)
    rollout.deploy(registry, target, "churn:2", canary_percent=20)
    status = rollout.deploy(registry, target, "churn:3")
    spec = _isvc(fake)["spec"]
    assert "canary" not in spec and _env(spec["predictor"]) == registry.get("churn", 3).bundle_uri
    assert _shares(status) == ((3, None), (100, None))
    assert _stages(registry)[3] == "production"


# ---------------------------------------------------------------- clusters that do not route canaries


def _refused(registry, target, fake, match: str) -> ConfigError:
    writes = len(fake.writes())
    with pytest.raises(ConfigError, match=match) as refused:
        rollout.deploy(registry, target, "churn:2", canary_percent=20)
    message = str(refused.value)
    assert "kserve#5912" in message and "Knative mode" in message and "deploy without a canary" in message
    assert "canary" not in _isvc(fake)["spec"], "the canary entry must be removed again"
    notes = _isvc(fake)["metadata"]["annotations"]
    assert "kfloop.io/canary-version" not in notes and notes[STABLE_VERSION] == "1"
    assert _stages(registry)[2] == "staging"
    assert _shares(target.status("churn")) == ((1, None), (100, None))
    assert len(fake.writes()) == writes + 2  # the entry, then its removal
    return refused.value


def test_kserve_0_20_creates_the_canary_but_routes_it_nothing_so_it_is_removed_and_refused(registry, target, fake):
    fake.kserve = "0.20"
    _serve_v1_in_standard_mode(registry, fake)
    error = _refused(registry, target, fake, "still has no backendRef to the canary's Service churn-v2-predictor")
    assert str(error).startswith(
        "a 20% canary of InferenceService churn is refused: it runs in Standard mode, where this cluster's KServe "
        "does not route traffic to a spec.canary entry: 0.1s after the canary got ready its HTTPRoute"
    )
    assert ROUTE_GET in [r["path"] for r in fake.requests]
    assert (NS, "churn-v2-predictor") not in fake.deployments  # the controller cleaned its Deployment up


def test_without_gateway_api_routes_the_canary_is_refused(registry, target, fake):
    fake.gateway_api = False
    _serve_v1_in_standard_mode(registry, fake)
    _refused(registry, target, fake, "no HTTPRoute churn-predictor .*enableGatewayApi")


def test_a_kserve_before_0_20_drops_the_field_and_is_refused_without_waiting(registry, target, fake):
    fake.kserve = "0.19"
    _serve_v1_in_standard_mode(registry, fake)
    _refused(registry, target, fake, r"dropped spec.canary \(KServe's CRD has it only since 0.20\)")
    assert ROUTE_GET not in [r["path"] for r in fake.requests]


def test_the_rawdeployment_name_of_older_manifests_is_standard_mode_too(registry, target, fake):
    fake.kserve = "0.20"
    _serve_v1_in_standard_mode(registry, fake)
    _isvc(fake)["metadata"]["annotations"][MODE_ANNOTATION] = "RawDeployment"
    _refused(registry, target, fake, "runs in RawDeployment mode")


def test_a_canary_that_never_gets_ready_is_removed_and_reported(registry, fake):
    _serve_v1_in_standard_mode(registry, fake)
    fake.canary_start_reconciles = 10**9  # e.g. its image cannot be pulled
    with pytest.raises(RegistryError, match="canary v2 .* did not become ready within 0.2s .*churn-v2-predictor"):
        rollout.deploy(registry, _target(fake, canary_timeout=0.2), "churn:2", canary_percent=20)
    assert "canary" not in _isvc(fake)["spec"] and _stages(registry)[2] == "staging"


def test_a_role_without_httproutes_is_named_and_leaves_no_canary(registry, target, fake):
    _serve_v1_in_standard_mode(registry, fake)
    fake.routes_denied = True
    with pytest.raises(ConfigError, match="needs get on httproutes.gateway.networking.k8s.io .*cannot get"):
        rollout.deploy(registry, target, "churn:2", canary_percent=20)
    assert "canary" not in _isvc(fake)["spec"] and _stages(registry)[2] == "staging"
    assert "kfloop.io/canary-version" not in _isvc(fake)["metadata"]["annotations"]


# ---------------------------------------------------------------- the setting


def test_off_refuses_a_standard_canary_before_writing_anything(registry, fake):
    _serve_v1_in_standard_mode(registry, fake)
    with pytest.raises(ConfigError, match="canaries in that mode are off .*nothing was written.*kserve#5912"):
        rollout.deploy(registry, _target(fake, standard_canary="off"), "churn:2", canary_percent=20)
    assert fake.writes() == []
    rollout.deploy(registry, _target(fake, standard_canary="off"), "churn:2")  # a full deploy is fine
    assert _env(_isvc(fake)["spec"]["predictor"]) == registry.get("churn", 2).bundle_uri


def test_on_writes_the_canary_without_checking_the_route(registry, fake):
    fake.kserve = "0.20"
    _serve_v1_in_standard_mode(registry, fake)
    rollout.deploy(registry, _target(fake, standard_canary="on"), "churn:2", canary_percent=20)
    assert _isvc(fake)["spec"]["canary"][0]["trafficPercent"] == 20
    assert not [r for r in fake.requests if "httproutes" in r["path"]]


def test_the_setting_comes_from_the_flag_else_the_environment(fake, tmp_path, monkeypatch):
    use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
    monkeypatch.setenv("KFLOOP_STANDARD_CANARY", "off")
    assert make_target(RolloutOptions(target="kubernetes")).standard_canary == "off"
    assert make_target(RolloutOptions(target="kubernetes", standard_canary="on")).standard_canary == "on"
    monkeypatch.setenv("KFLOOP_STANDARD_CANARY", "maybe")
    with pytest.raises(ConfigError, match="KFLOOP_STANDARD_CANARY='maybe': expected one of auto, on, off"):
        make_target(RolloutOptions(target="kubernetes"))
    monkeypatch.delenv("KFLOOP_STANDARD_CANARY")
    assert make_target(RolloutOptions(target="kubernetes")).standard_canary == "auto"
    with pytest.raises(ConfigError, match="KFLOOP_STANDARD_CANARY 'yes': expected one of auto, on, off"):
        RolloutOptions(target="kubernetes", standard_canary="yes")


def test_kfloop_rollout_deploy_names_the_flag_in_its_refusal(
    registry, fake, s3_settings, tmp_path, monkeypatch, capsys
):
    from kfloop.cli.main import main

    _serve_v1_in_standard_mode(registry, fake)
    use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
    for key, value in s3_settings.storage_env().items():
        monkeypatch.setenv(key, value)
    argv = ["rollout", "deploy", "churn:2", "--canary", "20", "--target", "kubernetes", "--standard-canary", "off"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: a 20% canary of InferenceService churn is refused") and "--standard-canary on" in err
    assert fake.writes() == []


# ---------------------------------------------------------------- the analysis' traffic


def test_the_analysis_selects_each_sides_pods_by_their_app_label(registry, fake, tmp_path, monkeypatch):
    _serve_v1_in_standard_mode(registry, fake)
    use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
    prometheus = FakePrometheus(lambda query: sample(7))
    try:
        options = RolloutOptions(target="kubernetes", prometheus_url=prometheus.url, prometheus_queries="kfloop")
        target = make_target(options)
        rollout.deploy(registry, _target(fake), "churn:2", canary_percent=20)
        source = make_source(options, target, None, "churn")
        assert isinstance(source, PrometheusSource) and source.revision_label == "app"
        names = {r["version"]: r["revision"] for r in target.status("churn")["revisions"]}  # as the controller
        stable, canary = source.collect("churn", Side(1, names[1]), Side(2, names[2]), source.begin("churn"))
        assert (stable.requests, canary.requests) == (7, 7)
        assert any('app="isvc.churn-v2-predictor"' in q for q in prometheus.queries)
        assert any('app="isvc.churn-predictor"' in q for q in prometheus.queries)
        assert all("serving_knative_dev_revision" not in q for q in prometheus.queries)
        with pytest.raises(ConfigError, match="no Knative queue-proxy, so the 'knative' Prometheus queries"):
            make_source(RolloutOptions(target="kubernetes", prometheus_url=prometheus.url), target, None, "churn")
    finally:
        prometheus.close()


@pytest.mark.parametrize(("canary_p99_ms", "outcome"), [(25, "promoted"), (400, "rolled-back")])
def test_an_analysis_in_standard_mode_steps_the_canary_then_promotes_or_rolls_back(
    registry, fake, tmp_path, monkeypatch, canary_p99_ms, outcome
):
    from kfloop.rollout.analysis import Thresholds, plan_for
    from kfloop.rollout.controller import run_analysis

    def answer(query):  # each side's pods by their app label: 300 requests, no 5xx, a p99 each
        if "5.." in query and "request_predict" not in query:
            return None  # Standard pods have no queue-proxy: no kn_serving_* series at all
        if "histogram_quantile" in query:
            return canary_p99_ms if 'app="isvc.churn-v2-predictor"' in query else 20  # ms: 1000 * ...
        return 300

    _serve_v1_in_standard_mode(registry, fake)
    use_kubeconfig(monkeypatch, tmp_path / "config", fake, NS)
    prometheus = FakePrometheus(lambda query: sample(answer(query)))
    try:
        options = RolloutOptions(target="kubernetes", prometheus_url=prometheus.url, prometheus_queries="kfloop")
        target = _target(fake)
        source = make_source(options, target, registry.store, "churn")
        plan = plan_for("canary", steps=[10, 50], hold_requests=50, poll_seconds=0.01, data_wait_seconds=0.0)
        result = run_analysis(
            registry, target, source, "churn", "churn:2", plan, Thresholds(), registry.store, sleep=lambda s: None
        )
    finally:
        prometheus.close()
    assert result["outcome"] == outcome, result
    spec = _isvc(fake)["spec"]
    assert "canary" not in spec
    if outcome == "promoted":
        assert spec["predictor"]["name"] == "v2" and _stages(registry)[2] == "production"
        assert _env(spec["predictor"]) == registry.get("churn", 2).bundle_uri
    else:
        assert "name" not in spec["predictor"] and _stages(registry)[2] == "rejected"
    weights = [r["body"]["spec"].get("canary") for r in fake.writes() if "canary" in r["body"]["spec"]]
    steps = [w[0]["trafficPercent"] for w in weights if w]
    assert steps == ([10, 50] if outcome == "promoted" else [10])
    assert any('app="isvc.churn-v2-predictor"' in q for q in prometheus.queries)


def test_a_knative_service_keeps_the_query_sets_revision_label(registry, fake):
    target = _target(fake)
    rollout.deploy(registry, target, "churn:1")
    assert target.revision_label("churn", "knative") is None
    assert target.revision_label("fraud", "knative") is None  # nothing deployed yet


# ---------------------------------------------------------------- reading an HTTPRoute


def _route(*rules: list[tuple[str, int | None]]) -> dict:
    def ref(name, weight):
        return {"kind": "Service", "name": name, **({} if weight is None else {"weight": weight})}

    return {"spec": {"rules": [{"backendRefs": [ref(*r) for r in rule]} for rule in rules]}}


@pytest.mark.parametrize(
    ("route", "share"),
    [
        (_route([("s", 80), ("c", 20)]), 20),
        (_route([("s", 80), ("c", 20)], [("s", 80), ("c", 20)]), 20),  # gRPC and HTTP rules
        (_route([("s", 80), ("c", 20)], [("s", None)]), None),  # a rule without the canary
        (_route([("s", 4), ("c", 1)]), 20),  # weights are proportions
        (_route([("s", None), ("c", None)]), 50),  # Gateway API's default weight is 1
        (_route([("s", 100), ("c", 0)]), 0),
        (_route([("s", None)]), None),
        (_route(), None),
    ],
)
def test_route_share(route, share):
    assert route_share(route, "c") == share

"""kfloop.rollout.factory: each rollout target and traffic source built from RolloutOptions, each bad
option refused with its message, as the CLI, the trigger and the deploy component spell it."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from kfloop.cli.main import main as kfloop_main
from kfloop.config import Settings
from kfloop.errors import ConfigError
from kfloop.rollout.factory import OptionNames, RolloutOptions, make_source, make_target
from kfloop.rollout.sources import KFLOOP_QUERIES, KNATIVE_QUERIES, LocalStatsSource, PrometheusSource
from kfloop.rollout.targets import kubernetes
from kfloop.rollout.targets.kubernetes import KubernetesTarget
from kfloop.rollout.targets.local import LocalTarget
from kfloop.serving.trigger.rollout_flags import add_flags, make_auto_rollout
from tests.fakes.kube_api import FakeKubeAPI, use_kubeconfig
from tests.fakes.loopback_http import LoopbackServer, QuietHandler, send_json
from tests.rollout.conftest import MODEL

CLI = OptionNames(
    target="--target",
    target_env="KFLOOP_ROLLOUT_TARGET",
    prometheus_url="--prometheus URL",
    prometheus_queries="--prometheus-queries",
)


@pytest.fixture
def gateway():
    """A gateway admin API on 127.0.0.1 that answers the status of MODEL and records the paths asked for."""
    paths = []

    class Handler(QuietHandler):
        def do_GET(self):
            paths.append(self.path)
            status = 200 if self.path == f"/kfloop/v1/models/{MODEL}" else 404
            send_json(self, status, {"model": MODEL, "target": "local", "windows": {"1": None}, "shadow": None})

    server = LoopbackServer(Handler)
    server.paths = paths
    yield server
    server.close()


def test_local_target_and_source_speak_to_the_gateway_of_the_options(gateway, registry):
    options = RolloutOptions(gateway_url=gateway.url + "/", gateway_timeout=7.0, stats_timeout=3.0)
    target = make_target(options)
    assert isinstance(target, LocalTarget) and target.timeout == 7.0
    assert target.status(MODEL)["windows"] == {"1": None}
    source = make_source(options, target, registry.store, MODEL)
    assert isinstance(source, LocalStatsSource) and source.timeout == 3.0
    assert source.begin(MODEL)["windows"] == {"1": None}
    assert gateway.paths == [f"/kfloop/v1/models/{MODEL}"] * 2


def test_kubernetes_target_and_prometheus_source(tmp_path, monkeypatch):
    fake = FakeKubeAPI()  # the source asks the service's deployment mode (Standard mode has no revisions)
    use_kubeconfig(monkeypatch, tmp_path / "config", fake, "models")
    options = RolloutOptions(
        target="kubernetes",
        namespace="models",
        image="registry.example/kfloop:1",
        prometheus_url="http://prometheus:9090",
        prometheus_queries="kfloop",
        stats_timeout=4.0,
    )
    target = make_target(options)
    assert isinstance(target, KubernetesTarget)
    assert (target.namespace, target.image, target.isvc_name) == ("models", "registry.example/kfloop:1", None)
    source = make_source(options, target, None, MODEL)
    assert isinstance(source, PrometheusSource)
    assert (source.url, source.namespace, source.isvc, source.timeout) == (
        "http://prometheus:9090",
        "models",
        MODEL,
        4.0,
    )
    assert source.queries == KFLOOP_QUERIES
    assert source.revision_label == "serving_knative_dev_revision"  # nothing deployed: Knative's
    assert [r["path"] for r in fake.requests] == [
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/churn"
    ]
    fake.close()


def test_prometheus_next_to_a_local_target_queries_the_pods_namespace(monkeypatch, tmp_path):
    options = RolloutOptions(prometheus_url="http://prometheus:9090")
    target = make_target(options)
    monkeypatch.setattr(kubernetes, "SA_NAMESPACE_FILE", tmp_path / "missing")
    source = make_source(options, target, None, MODEL)
    assert (source.namespace, source.isvc, source.queries) == ("default", MODEL, KNATIVE_QUERIES)
    (tmp_path / "namespace").write_text("team-a\n")
    monkeypatch.setattr(kubernetes, "SA_NAMESPACE_FILE", tmp_path / "namespace")
    assert make_source(options, target, None, MODEL).namespace == "team-a"
    named = RolloutOptions(prometheus_url="http://prometheus:9090", namespace="models")
    assert make_source(named, target, None, MODEL).namespace == "models"


def test_an_empty_prometheus_url_means_the_gateway():
    options = RolloutOptions(prometheus_url="")
    assert isinstance(make_source(options, make_target(options), None, MODEL), LocalStatsSource)


def test_building_options_and_a_kubernetes_target_imports_no_http_or_kubernetes_client():
    code = (
        "import sys\n"
        "from kfloop.rollout.factory import RolloutOptions, make_target\n"
        "options = RolloutOptions(target='kubernetes', namespace='models')\n"
        "assert 'httpx' not in sys.modules, 'httpx'\n"
        "make_target(options)\n"
        "print(sorted(m for m in ('kubernetes', 'httpx') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            dict(target="nowhere", names=CLI),
            "KFLOOP_ROLLOUT_TARGET='nowhere' is not a rollout target; expected one of ('local', 'kubernetes')",
        ),
        (
            dict(target="kserve", names=OptionNames(target="--rollout_target")),
            "--rollout_target='kserve' is not a rollout target; expected one of ('local', 'kubernetes')",
        ),
        (
            dict(
                target="kserve", names=OptionNames("deploy_target", unknown_target="{name} {kind!r}: expected {kinds}")
            ),
            "deploy_target 'kserve': expected ('local', 'kubernetes')",
        ),
        (
            dict(gateway_url="127.0.0.1:8080", names=OptionNames(gateway_url="--gateway")),
            "--gateway '127.0.0.1:8080': expected an http:// or https:// URL",
        ),
        (
            dict(prometheus_url="prometheus:9090"),
            "prometheus_url 'prometheus:9090': expected an http:// or https:// URL",
        ),
        (dict(prometheus_url="http://"), "prometheus_url 'http://': expected an http:// or https:// URL"),
        (dict(gateway_timeout=0), "rollout option gateway_timeout=0: expected a positive number of seconds"),
        (dict(stats_timeout=-1.0), "rollout option stats_timeout=-1.0: expected a positive number of seconds"),
    ],
)
def test_bad_options_are_refused_with_their_message(options, message):
    with pytest.raises(ConfigError) as refused:
        RolloutOptions(**options)
    assert str(refused.value) == message


def test_a_cluster_gateway_url_is_not_checked_since_a_kubernetes_rollout_has_no_gateway():
    assert RolloutOptions(target="kubernetes", gateway_url="").gateway_url == ""


def test_a_cluster_analysis_needs_prometheus_and_a_known_query_set():
    options = RolloutOptions(target="kubernetes", namespace="models", names=CLI)
    with pytest.raises(ConfigError) as refused:
        make_source(options, make_target(options), None, MODEL)
    assert str(refused.value) == "--target kubernetes needs --prometheus URL to read the revisions' traffic"
    with pytest.raises(ConfigError) as refused:
        RolloutOptions(prometheus_url="http://prometheus:9090", prometheus_queries="datadog", names=CLI)
    assert str(refused.value) == (
        "--prometheus-queries 'datadog' is not a Prometheus query set; expected one of knative, knative-legacy, kfloop"
    )


def test_a_missing_kubernetes_target_module_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "kfloop.rollout.targets.kubernetes", None)  # as if the module were not there
    with pytest.raises(ConfigError) as refused:
        make_target(RolloutOptions(target="kubernetes", names=CLI))
    assert str(refused.value).startswith(
        "--target kubernetes needs kfloop/rollout/targets/kubernetes.py (KubernetesTarget)"
    )
    assert str(refused.value).endswith("use --target local")


def test_the_trigger_refuses_a_cluster_rollout_without_prometheus_at_start_up(monkeypatch):
    monkeypatch.delenv("KFLOOP_PROMETHEUS_URL", raising=False)
    parser = argparse.ArgumentParser()
    add_flags(parser, Settings.from_env())
    args = parser.parse_args(["--auto_rollout", "canary", "--rollout_target", "kubernetes"])
    with pytest.raises(ConfigError) as refused:
        make_auto_rollout(args, None, None)
    assert str(refused.value) == "--rollout_target kubernetes needs --prometheus_url to read the revisions' traffic"
    assert make_auto_rollout(parser.parse_args([]), None, None) is None  # off by default


def test_kfloop_rollout_analyze_on_a_cluster_without_prometheus_fails_with_the_flags_names(registry, capsys):
    home = registry.store.root
    argv = ["--home", str(home), "rollout", "analyze", f"{MODEL}:2", "--target", "kubernetes", "--namespace", "models"]
    assert kfloop_main(argv) == 1
    assert capsys.readouterr().err == (
        "error: --target kubernetes needs --prometheus URL to read the revisions' traffic\n"
    )
    assert registry.get(MODEL, 2).stage != "production"  # nothing was deployed

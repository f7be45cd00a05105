"""The alerting rules and the Grafana dashboard of manifests/overlays/monitoring: the rules pass
``promtool check rules`` and fire on the series they are about (``promtool test rules``), and every
metric a rule or a panel reads is one the code exports: collected here from the real collectors of
the transformer, the predictor and the trigger service (Knative's queue-proxy metric is the one the
canary analysis queries too)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from kfloop.config import Settings
from kfloop.events.outbox import Outbox
from kfloop.monitoring.capture import CaptureWriter
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.drift_monitor import DriftMonitor
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.monitoring.quality_window import WindowedQuality
from kfloop.retraining.policy import RetrainPolicy
from kfloop.retraining.runners import LocalRunner
from kfloop.retraining.trigger import RetrainTrigger
from kfloop.rollout import sources
from kfloop.rollout.analysis import AnalysisPlan, Thresholds
from kfloop.rollout.auto import AutoRollout
from kfloop.store.objects import LocalStore
from tests.conftest import wait_for
from tests.fakes.manifests import MANIFESTS, of_kind, render
from tests.fakes.quality import churn_model, training_frame

OVERLAY = MANIFESTS / "overlays" / "monitoring"
DASHBOARD = OVERLAY / "kfloop-dashboard.json"
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile", "or", "and", "unless"}


def rule_groups() -> list[dict]:
    doc = yaml.safe_load((OVERLAY / "prometheusrule-kfloop.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    return doc["spec"]["groups"]


def rule_exprs() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for group in rule_groups() for rule in group["rules"]}


def panel_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"])[1])
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges and grouping labels removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    return {n for n in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr) if n not in PROMQL_WORDS}


def sample_names(collectors) -> set[str]:
    """The series names collectors expose (counters with ``_total``, histograms with their suffixes)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = set()
    for collector in collectors:
        for family in collector.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    import kserve.metrics

    from kfloop.serving.model_servers import predictor, transformer_metrics
    from kfloop.serving.model_servers.forward_batching import ForwardCoalescer
    from kfloop.serving.trigger.metrics import TriggerCollector

    tmp = tmp_path_factory.mktemp("exported")
    model = churn_model()
    detector = fit_baseline(model.schema, model.schema.encode_frame(training_frame()), backend="scipy")
    outbox = Outbox(tmp / "outbox", sink_url=None)
    monitor = DriftMonitor(
        WindowedDrift(detector, 100), outbox, "s", cpu_share=1, quality=WindowedQuality(model.baseline, 100)
    )
    decoded, answers = model.window(100, seed=1)
    monitor.submit(decoded.X, answers.tolist(), decoded.unseen)
    wait_for(lambda: monitor.windows_checked == 1)
    monitor.stop()
    capture = CaptureWriter(LocalStore(tmp / "home"), "churn")
    coalescer = ForwardCoalescer(None, max_rows=100, max_bytes=10_000)  # its counters, read at scrape time
    transformer = transformer_metrics.TransformerCollector("churn", lambda: (monitor, capture, outbox, coalescer))
    settings = Settings(home=tmp / "trigger")
    trigger = RetrainTrigger(settings, RetrainPolicy(), LocalRunner(settings), Outbox(tmp / "t", sink_url=None))
    trigger.auto_rollout = AutoRollout(LocalStore(tmp / "home"), AnalysisPlan(), Thresholds(), None, None)
    names = sample_names(
        [
            transformer,
            TriggerCollector(trigger),
            transformer_metrics.REQUESTS,
            transformer_metrics.ERRORS,
            transformer_metrics.PREDICTOR_ERRORS,
            predictor.UNSEEN_CATEGORIES,
            kserve.metrics.PREDICT_HIST_TIME,
        ]
    )
    capture.close(1)
    # Knative's queue-proxy metric: not kfloop's, but the one the canary analysis queries
    knative = set().union(*(metric_names(q) for q in sources.KNATIVE_QUERIES.values()))
    return names | knative


def test_every_metric_an_alert_or_a_panel_reads_is_exported(exported):
    used = {name: metric_names(expr) for name, expr in rule_exprs().items()}
    for i, expr in enumerate(panel_exprs()):
        used[f"panel query {i}"] = metric_names(expr)
    assert used["KfloopPredictionDrift"] == {"kfloop_prediction_drift_windows_total"}
    assert used["KfloopRolledBack"] == {"kfloop_trigger_rollouts_total"}
    unknown = {where: sorted(names - exported) for where, names in used.items() if names - exported}
    assert not unknown, f"metrics no code exports: {unknown}"
    # and the signals of this work are all watched
    every = set().union(*used.values())
    assert {
        "kfloop_data_quality_violations_total",
        "kfloop_data_quality_windows_total",
        "kfloop_prediction_drift_p_value",
        "kfloop_drift_detected_total",
        "kfloop_capture_records_dropped_total",
        "kfloop_outbox_depth",
        "request_predict_seconds_bucket",
        "kn_serving_invocation_duration_seconds_bucket",
    } <= every


def test_metric_names_are_read_out_of_promql():
    expr = 'sum by (namespace, model_name) (increase(kfloop_x_total{status="a b"}[15m])) > 0 or max(kfloop_y) > 1'
    assert metric_names(expr) == {"kfloop_x_total", "kfloop_y"}


def test_the_overlay_renders_the_rules_the_podmonitors_and_the_dashboard():
    docs = render(OVERLAY)
    [rule] = of_kind(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "kubeflow-user-example-com"
    assert {d["metadata"]["name"] for d in of_kind(docs, "PodMonitor")} == {"kfloop-serving", "kfloop-trigger"}
    [dashboard] = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "kfloop-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["kfloop-dashboard.json"])["panels"]
    assert len(panels) >= 10 and all(p["targets"] for p in panels)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; .ci/run does)")
    return path


def test_the_rules_pass_promtool_check(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}))
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in result.stdout


def test_the_alerts_fire_on_their_series_and_not_on_quiet_ones(tmp_path):
    tool = promtool()
    rules = tmp_path / "rules.yaml"  # without annotations: this test is about when alerts fire
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules.write_text(yaml.safe_dump({"groups": groups}))
    m = 'namespace="ns",model_name="churn"'
    series = [
        # two prediction-drift alerts in a few minutes; data quality: out_of_range twice, missing_rate never
        {"series": f'kfloop_prediction_drift_windows_total{{{m},status="alert"}}', "values": "0 0 1 2 2 2"},
        {"series": f'kfloop_prediction_drift_windows_total{{{m},status="ok"}}', "values": "0 5 10 15 20 25"},
        {"series": f'kfloop_data_quality_violations_total{{{m},check="out_of_range"}}', "values": "0 0 0 2 2 2"},
        {"series": f'kfloop_data_quality_violations_total{{{m},check="missing_rate"}}', "values": "0 0 0 0 0 0"},
        {"series": f"kfloop_drift_detected_total{{{m}}}", "values": "0 0 0 0 0 0"},
        {"series": 'kfloop_trigger_rollouts_total{namespace="ns",outcome="rolled-back"}', "values": "0 0 1 1 1 1"},
        {"series": 'kfloop_trigger_rollouts_total{namespace="ns",outcome="promoted"}', "values": "0 1 1 1 1 1"},
        {"series": f'kfloop_outbox_depth{{{m},pod="p"}}', "values": "500+0x30"},
    ]

    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "KfloopPredictionDrift",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "warning", "namespace": "ns", "model_name": "churn"}}
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "KfloopDataQualityViolated",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "ns",
                                    "model_name": "churn",
                                    "check": "out_of_range",
                                }
                            }
                        ],
                    },
                    {"eval_time": "5m", "alertname": "KfloopFeatureDrift", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "KfloopRolledBack",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": "ns"}}],
                    },
                    {"eval_time": "5m", "alertname": "KfloopOutboxBacklog", "exp_alerts": []},  # not for 10m yet
                    {
                        "eval_time": "20m",
                        "alertname": "KfloopOutboxBacklog",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "warning", "namespace": "ns", "model_name": "churn"}}
                        ],
                    },
                ],
            }
        ],
    }
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(tests))
    result = subprocess.run([tool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

"""The compiled pipeline YAML: up to date with its source, valid KFP IR, loadable, no secrets."""

from __future__ import annotations

import re

import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from kfloop.config import DEFAULT_IMAGE
from kfloop.pipelines.training import YAML_PATH, compile_pipeline
from tests.conftest import REPO

STEPS = {"process", "tune", "train", "evaluate", "analyze", "baseline", "signal-baselines", "register", "deploy"}


@pytest.fixture(scope="module")
def documents():
    return list(yaml.safe_load_all(YAML_PATH.read_text()))


def test_committed_yaml_is_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(tmp_path / "training.yaml", image=DEFAULT_IMAGE)
    assert fresh.read_bytes() == YAML_PATH.read_bytes(), (
        "pipelines/training.yaml is stale: run 'kfloop pipeline compile' and commit it"
    )


def test_compilation_is_byte_identical(tmp_path):
    first = compile_pipeline(tmp_path / "a.yaml").read_bytes()
    assert compile_pipeline(tmp_path / "b.yaml").read_bytes() == first


def test_yaml_parses_into_pipeline_spec_with_no_unknown_fields(documents):
    spec, platform = documents
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert parsed.pipeline_info.name == "kfloop-training"
    assert {t for t in parsed.root.dag.tasks} >= STEPS - {"register", "deploy"}
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)


def test_yaml_loads_as_a_component_with_the_pipeline_parameters():
    pipeline = components.load_component_from_file(str(YAML_PATH))
    params = pipeline.component_spec.inputs
    assert {
        "source",
        "target",
        "model_name",
        "threshold",
        "tolerance",
        "require_approval",
        "deploy_target",
        "canary_percent",
        "namespace",
        "gateway_url",
        "tuning_trials",
        "tuning_budget_seconds",
        "tuning_ranges",
    } <= set(params)
    assert params["deploy_target"].default == ""  # deploying is opt-in
    assert params["tuning_trials"].default == 0  # and so is tuning


def test_register_runs_only_when_the_gate_passes(documents):
    spec = documents[0]
    condition = spec["root"]["dag"]["tasks"]["condition-1"]
    assert "evaluate-Output" in condition["triggerPolicy"]["condition"]
    assert "register" in spec["components"]["comp-condition-1"]["dag"]["tasks"]


def test_deploy_runs_only_when_requested_and_no_approval_is_pending(documents):
    components = documents[0]["components"]
    requested = components["comp-condition-1"]["dag"]["tasks"]["condition-2"]
    assert requested["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--deploy_target'] != ''"
    approved = components["comp-condition-2"]["dag"]["tasks"]["condition-3"]
    assert "require_approval'] == false" in approved["triggerPolicy"]["condition"]
    deploy = components["comp-condition-3"]["dag"]["tasks"]["deploy"]
    assert deploy["inputs"]["parameters"]["model_ref"]["componentInputParameter"] == "pipelinechannel--register-Output"


def test_every_step_runs_on_the_project_image_without_installing_kfp(documents):
    executors = documents[0]["deploymentSpec"]["executors"]
    assert len(executors) == len(STEPS)
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE
        assert "pip install" not in " ".join(container["command"])


def test_credentials_come_from_a_secret_and_no_secret_values_are_in_the_yaml(documents):
    text = YAML_PATH.read_text()
    for pattern in (r"AKIA[0-9A-Z]{16}", r"minio123", r"(?i)password", r"KFLOOP_S3_(ACCESS|SECRET)_KEY\s*[=:]\s*\S"):
        assert not re.search(pattern, text), pattern
    for executor in documents[0]["deploymentSpec"]["executors"].values():
        literal_env = {e["name"] for e in executor["container"].get("env", [])}
        assert not {n for n in literal_env if n.startswith("KFLOOP_S3")}, literal_env
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}" for s in STEPS}
    for config in executors.values():
        envs = {e["envVar"] for s in config["secretAsEnv"] for e in s["keyToEnv"]}
        assert envs == {"KFLOOP_S3_ACCESS_KEY", "KFLOOP_S3_SECRET_KEY"}
        assert {s["secretName"] for s in config["secretAsEnv"]} == {"kfloop-s3"}


def test_the_config_map_the_steps_read_is_the_one_the_manifests_generate(documents):

    from kfloop.pipelines.training import CONFIG_MAP_KEYS, CONFIG_MAP_NAME

    kustomization = yaml.safe_load((REPO / "manifests/base/kustomization.yaml").read_text())
    generator = next(g for g in kustomization["configMapGenerator"] if g["name"] == CONFIG_MAP_NAME)
    assert generator["options"]["disableNameSuffixHash"] is True  # steps refer to it by its plain name
    assert set(CONFIG_MAP_KEYS) <= {literal.split("=", 1)[0] for literal in generator["literals"]}
    for config in documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        (config_map,) = config["configMapAsEnv"]
        assert config_map["configMapName"] == CONFIG_MAP_NAME
        assert {e["configMapKey"] for e in config_map["keyToEnv"]} == set(CONFIG_MAP_KEYS)


def _tasks(spec: dict, dag: dict | None = None):
    """Every task of the pipeline, inside conditions too: (name, task spec)."""
    for name, task in (dag or spec["root"]["dag"])["tasks"].items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            yield from _tasks(spec, component["dag"])
        else:
            yield name, task


def test_only_the_steps_that_are_pure_functions_of_their_inputs_are_cached(documents):
    caching = {name: task.get("cachingOptions", {}).get("enableCache", False) for name, task in _tasks(documents[0])}
    assert set(caching) == STEPS
    cached = {name for name, cached in caching.items() if cached}
    assert cached == {"tune", "train", "analyze", "baseline", "signal-baselines"}
    # process (a moving source), evaluate (production), register and deploy (they write) read live state
    assert not any(caching[name] for name in ("process", "evaluate", "register", "deploy"))


def test_train_takes_its_parameters_from_the_tune_step(documents):
    tasks = dict(_tasks(documents[0]))
    params = tasks["train"]["inputs"]["artifacts"]["params"]["taskOutputArtifact"]
    assert params == {"outputArtifactKey": "params", "producerTask": "tune"}
    assert "triggerPolicy" not in tasks["tune"]  # always runs: with tuning_trials 0 it passes the parameters through
    assert tasks["tune"]["inputs"]["parameters"]["tuning_trials"]["componentInputParameter"] == "tuning_trials"

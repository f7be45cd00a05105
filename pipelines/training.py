"""The training pipeline: process -> train -> evaluate (+ analyze, baseline) -> If(gate) -> register
-> If(deploy_target) -> deploy.

Only wiring lives here; every step is a component from ``components/``. Compile with
``kfloop pipeline compile`` (writes ``pipelines/training.yaml``, committed) and run it locally
with ``kfloop pipeline run`` or on Kubeflow with ``kfloop pipeline submit`` / ``kfp run submit``.

On a cluster, tasks read object storage settings from the ConfigMap ``kfloop-config``
(``s3_endpoint``, ``s3_bucket``) and credentials from the Secret ``kfloop-s3``
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``); no value is written into the YAML.

Deploying is opt-in: with ``deploy_target`` ``"kubernetes"`` (the InferenceService named after the
model in ``namespace``, default the run's own) or ``"local"`` (the ``kfloop serve`` gateway at
``gateway_url``), a registered version takes ``canary_percent`` of the traffic (100: all of it; the
first deploy of a model takes all). Versions awaiting approval (``require_approval``) are not
deployed. On Kubernetes the deploy step patches InferenceServices with the run's ServiceAccount:
KFP sets it per run, not per task (see manifests/README.md).

(No ``from __future__ import annotations`` here: KFP reads the pipeline function's real annotations.)
"""


from pathlib import Path

from kfp import compiler, dsl, kubernetes

from kfloop.components import build_components
from kfloop.config import DEFAULT_IMAGE

PIPELINE_NAME = "kfloop-training"
YAML_PATH = Path(__file__).with_name("training.yaml")
SECRET_NAME = "kfloop-s3"
CONFIG_MAP_NAME = "kfloop-config"


def _configure(task: dsl.PipelineTask, cpu: str = "1", memory: str = "2G") -> dsl.PipelineTask:
    """Storage settings from the ConfigMap/Secret, resources, and no caching (steps read live state)."""
    kubernetes.use_config_map_as_env(task, CONFIG_MAP_NAME, {"s3_endpoint": "KFLOOP_S3_ENDPOINT",
                                                             "s3_bucket": "KFLOOP_S3_BUCKET"}, optional=True)
    kubernetes.use_secret_as_env(task, SECRET_NAME, {"AWS_ACCESS_KEY_ID": "KFLOOP_S3_ACCESS_KEY",
                                                     "AWS_SECRET_ACCESS_KEY": "KFLOOP_S3_SECRET_KEY"}, optional=True)
    task.set_cpu_request(cpu).set_memory_request(memory).set_cpu_limit(cpu).set_memory_limit(memory)
    return task.set_caching_options(False)


def build_pipeline(image: str = DEFAULT_IMAGE):
    """The pipeline function with its components on ``image``."""
    c = build_components(image)

    @dsl.pipeline(name=PIPELINE_NAME, description="Validate, split, train, evaluate, check bias and drift "
                  "baseline, and register an XGBoost model when it passes the quality gate.")
    def training(source: str = "sample:churn", target: str = "churn", model_name: str = "churn",
                 task: str = "", seed: int = 0, valid_fraction: float = 0.15, test_fraction: float = 0.15,
                 max_missing_rate: float = 0.5, n_estimators: int = 200, max_depth: int = 6,
                 learning_rate: float = 0.1, subsample: float = 1.0, colsample_bytree: float = 1.0,
                 min_child_weight: float = 1.0, early_stopping_rounds: int = 20, threshold: float = 0.7,
                 tolerance: float = 0.01, sensitive_feature: str = "", drift_backend: str = "alibi",
                 drift_p_val: float = 0.05, require_approval: bool = False, deploy_target: str = "",
                 canary_percent: int = 10, namespace: str = "", gateway_url: str = "http://127.0.0.1:8080"):
        processed = _configure(c.process(
            source=source, target=target, task=task, seed=seed, valid_fraction=valid_fraction,
            test_fraction=test_fraction, max_missing_rate=max_missing_rate)).set_display_name("process")
        trained = _configure(c.train(
            train=processed.outputs["train"], valid=processed.outputs["valid"], schema=processed.outputs["schema"],
            n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate, subsample=subsample,
            colsample_bytree=colsample_bytree, min_child_weight=min_child_weight,
            early_stopping_rounds=early_stopping_rounds, seed=seed), cpu="2", memory="4G").set_display_name("train")
        evaluated = _configure(c.evaluate(
            model=trained.outputs["model"], test=processed.outputs["test"], model_name=model_name,
            threshold=threshold, tolerance=tolerance)).set_display_name("evaluate")
        analyzed = _configure(c.analyze(
            model=trained.outputs["model"], test=processed.outputs["test"],
            evaluation=evaluated.outputs["evaluation"], sensitive_feature=sensitive_feature)
        ).set_display_name("bias-and-explainability")
        baseline = _configure(c.baseline(
            model=trained.outputs["model"], train=processed.outputs["train"], drift_backend=drift_backend,
            drift_p_val=drift_p_val)).set_display_name("drift-baseline")
        with dsl.If(evaluated.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition)
            registered = _configure(c.register(
                model=trained.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                analysis=analyzed.outputs["analysis"], detector=baseline.outputs["detector"],
                model_name=model_name, data_uri=processed.outputs["data_uri"],
                data_sha256=processed.outputs["data_sha256"], require_approval=require_approval,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )).set_display_name("register")
            # One simple condition per dsl.If on pipeline parameters: what kfp.local can evaluate.
            with dsl.If(deploy_target != "", name="deploy-requested"):
                with dsl.If(require_approval == False, name="no-approval-required"):  # noqa: E712
                    _configure(c.deploy(
                        model_ref=registered.output, deploy_target=deploy_target, canary_percent=canary_percent,
                        namespace=namespace, gateway_url=gateway_url), cpu="500m", memory="1G"
                    ).set_display_name("deploy")

    return training


def compile_pipeline(path: str | Path = YAML_PATH, image: str = DEFAULT_IMAGE) -> Path:
    """Compile the pipeline to YAML; byte-identical for the same source, image and kfp version."""
    compiler.Compiler().compile(build_pipeline(image), str(path))
    return Path(path)

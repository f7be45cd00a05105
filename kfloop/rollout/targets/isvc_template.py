"""The InferenceService a model is first deployed with on Kubernetes, built from the base manifest.

The one source of truth is ``manifests/base/inferenceservice.yaml``. The installed package (the
pipeline image) has no ``manifests/`` folder, so the manifest's text is copied verbatim into
``BASE_YAML`` at the end of this module; ``tests/rollout/targets/test_kubernetes.py`` fails when the copy
differs, and ``python -m kfloop.rollout.targets.isvc_template`` refreshes it from a checkout after the manifest changes.

The object is the base with the model's name (``metadata.name`` and ``--model_name``), its
namespace, kfloop's annotations and the version's bundle as the predictor's storage URI. Like the
base, it refers to the ConfigMap ``kfloop-config`` and the ServiceAccount ``kfloop-serving``.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from kfloop.errors import ConfigError
from kfloop.rollout.targets.isvc_status import MODEL_VERSION, STABLE_VERSION
from kfloop.store.bundle import MODEL_FILE

MANIFEST_PATH = Path(__file__).resolve().parents[3] / "manifests" / "base" / "inferenceservice.yaml"
PREDICTOR_CONTAINER = "kserve-container"
STORAGE_ENV = "STORAGE_URI"
PART_OF = {"app.kubernetes.io/part-of": "kfloop"}
SHADOW_OF_LABEL = "kfloop.io/shadow-of"  # on a shadow InferenceService: the one whose transformer mirrors to it
KSERVE_ANNOTATIONS = "serving.kserve.io/"  # copied from the main service to its shadow
MARKER = 'BASE_YAML = r"""'


@functools.lru_cache(maxsize=1)
def _parsed() -> dict:
    return yaml.safe_load(BASE_YAML)


def base() -> dict:
    """The base manifest as an object (a fresh copy)."""
    return copy.deepcopy(_parsed())


def inferenceservice(
    name: str,
    namespace: str,
    storage_uri: str,
    annotations: dict[str, str],
    image: str | None = None,
    version: str | None = None,
) -> dict:
    """The InferenceService ``name`` serving the bundle at ``storage_uri``."""
    obj = base()
    meta = obj["metadata"]
    meta.update(name=name, namespace=namespace)
    meta["labels"] = {**meta.get("labels", {}), **PART_OF}
    meta["annotations"] = {**meta.get("annotations", {}), **annotations}
    for component in ("predictor", "transformer"):
        for container in obj["spec"].get(component, {}).get("containers", []):
            _set_flag(container.get("args", []), "--model_name", name)
            if image:
                container["image"] = image
    obj["spec"]["predictor"] = with_storage_uri(obj["spec"]["predictor"], storage_uri, version)
    return obj


def shadow_inferenceservice(main: dict, name: str, storage_uri: str, version: str) -> dict:
    """The predictor-only InferenceService ``name`` that serves ``version`` (bundle ``storage_uri``) as a
    shadow candidate of the InferenceService ``main``: a copy of its predictor (same runtime, model name,
    resources, ServiceAccount; no canary, no name of a Standard-mode canary entry) and its KServe
    annotations (deployment mode, metrics), with kfloop's version annotations and the label
    ``SHADOW_OF_LABEL`` naming ``main``. No transformer: nothing captures or drift-checks its answers."""
    meta = main.get("metadata") or {}
    predictor = with_storage_uri(main["spec"]["predictor"], storage_uri, version)
    for field in ("canaryTrafficPercent", "name"):
        predictor.pop(field, None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(KSERVE_ANNOTATIONS)}
    annotations.update({MODEL_VERSION: version, STABLE_VERSION: version})
    return {
        "apiVersion": main.get("apiVersion") or "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": {**PART_OF, SHADOW_OF_LABEL: meta["name"]},
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def with_storage_uri(predictor: dict, uri: str, version: str | None = None) -> dict:
    """A copy of a predictor spec that serves the bundle folder ``uri`` (registry ``version``).

    A custom predictor container (the base) gets it as its ``STORAGE_URI`` variable and the
    version as ``--model_version`` (so V2 answers and captures name the version that answered,
    canary or stable); a model spec on a stock runtime (``overlays/xgbserver``) gets
    ``storageUri`` of the bundle's booster file."""
    predictor = copy.deepcopy(predictor)
    if "model" in predictor:
        predictor["model"]["storageUri"] = uri.rstrip("/") + "/" + MODEL_FILE
        return predictor
    container = _predictor_container(predictor)
    if version is not None:
        args = container.setdefault("args", [])
        if "--model_version" in args[:-1]:
            _set_flag(args, "--model_version", version)
        else:
            args += ["--model_version", version]
    env = container.setdefault("env", [])
    entry = next((e for e in env if e.get("name") == STORAGE_ENV), None)
    if entry is None:
        env.insert(0, {"name": STORAGE_ENV, "value": uri})
    else:
        entry.clear()
        entry.update(name=STORAGE_ENV, value=uri)
    return predictor


def storage_uri(predictor: dict) -> str | None:
    """The bundle a predictor spec serves (``with_storage_uri``'s inverse), or None."""
    if "model" in predictor:
        return predictor["model"].get("storageUri")
    env = _predictor_container(predictor).get("env", [])
    return next((e.get("value") for e in env if e.get("name") == STORAGE_ENV), None)


def _predictor_container(predictor: dict) -> dict:
    containers = predictor.get("containers") or []
    found = [c for c in containers if c.get("name") == PREDICTOR_CONTAINER]
    if not found:
        names = [c.get("name") for c in containers]
        raise ConfigError(
            f"the InferenceService predictor has no container {PREDICTOR_CONTAINER!r} "
            f"(containers: {names}) and no model spec: cannot set its storage URI"
        )
    return found[0]


def _set_flag(args: list[str], flag: str, value: str) -> None:
    if flag in args[:-1]:
        args[args.index(flag) + 1] = value


def sync(manifest: Path = MANIFEST_PATH, module: Path = Path(__file__)) -> bool:
    """Copy ``manifest`` into ``BASE_YAML`` of this module's file; returns whether it changed."""
    text = module.read_text()
    start = text.index("\n" + MARKER) + 1 + len(MARKER)
    updated = text[:start] + manifest.read_text() + '"""\n'
    if updated != text:
        module.write_text(updated)
    return updated != text


if __name__ == "__main__":
    print(f"{'updated' if sync() else 'already up to date'}: {__file__} from {MANIFEST_PATH}")


# Generated from manifests/base/inferenceservice.yaml by `python -m kfloop.rollout.targets.isvc_template`; do not edit.
BASE_YAML = r"""# The served model: a kfloop predictor (kserve.ModelServer reading the model bundle) behind the kfloop
# drift transformer, in KServe's Knative mode (called Serverless in older KServe releases; 0.20 still accepts
# and normalizes that name) so revisions, canary traffic splitting and scale-to-zero are available.
#
# Metrics: KServe annotates the pods for Prometheus and has queue-proxy serve its own metrics (Knative's
# kn_serving_invocation_duration_seconds) together with the container's (KServe's request_predict_seconds,
# kfloop's kfloop_*) on port 9088, named aggr-metric, which the canary analysis queries
# (kfloop.rollout.sources; the PodMonitor of overlays/auto-rollout scrapes it).
#
# Model: the storage initializer KServe injects downloads STORAGE_URI (a bundle folder of the kfloop
# registry) to /mnt/models using the S3 Secret of the ServiceAccount. The pipeline's deploy step (or an
# overlay patch) replaces the placeholder bundle id with the one to serve.
#
# Security: Knative rejects most pod-level securityContext fields unless its
# kubernetes.podspec-securitycontext feature is on, so the restricted settings are set per container.
# The root filesystem is read-only; /tmp is an emptyDir (HOME, KFLOOP_HOME and caches live there).
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: churn
  annotations:
    serving.kserve.io/deploymentMode: Knative
    serving.kserve.io/enable-prometheus-scraping: "true"
    serving.kserve.io/enable-metric-aggregation: "true"
spec:
  predictor:
    serviceAccountName: kfloop-serving
    minReplicas: 1
    maxReplicas: 3
    containers:
      - name: kserve-container
        image: ghcr.io/kfloop/kfloop:0.1.0
        command: ["python", "-m", "kfloop.serving.model_servers.predictor"]
        args: ["--model_name", "churn", "--model_dir", "/mnt/models", "--http_port", "8080"]
        env:
          - name: STORAGE_URI
            value: s3://kfloop/models/churn/bundles/BUNDLE_ID/
          - name: HOME
            value: /tmp
          - name: MPLCONFIGDIR
            value: /tmp/matplotlib
        envFrom:
          - configMapRef:
              name: kfloop-config
        ports:
          - containerPort: 8080
            protocol: TCP
        resources:
          requests:
            cpu: 500m
            memory: 1Gi
          limits:
            cpu: "1"
            memory: 2Gi
        securityContext:
          runAsNonRoot: true
          runAsUser: 1000
          runAsGroup: 1000
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: ["ALL"]
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
          - name: tmp
            mountPath: /tmp
    volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 256Mi
  transformer:
    serviceAccountName: kfloop-serving
    minReplicas: 1
    maxReplicas: 3
    # The SinkBinding (sinkbinding-transformer.yaml) selects the transformer's Deployment by this label
    # and injects K_SINK, the address of the kfloop Broker, where drift events are sent.
    labels:
      kfloop.io/emits-events: "true"
    containers:
      - name: kserve-container
        image: ghcr.io/kfloop/kfloop:0.1.0
        command: ["python", "-m", "kfloop.serving.model_servers.transformer"]
        # KServe appends --predictor_host (the predictor's address) to these arguments.
        args: ["--model_name", "churn", "--predictor_protocol", "v1", "--http_port", "8080"]
        env:
          - name: HOME
            value: /tmp
          - name: MPLCONFIGDIR
            value: /tmp/matplotlib
          # Data capture goes to the kfloop bucket; KServe's Secret keys are mapped to kfloop's names.
          - name: KFLOOP_S3_ACCESS_KEY
            valueFrom:
              secretKeyRef:
                name: kfloop-s3
                key: AWS_ACCESS_KEY_ID
          - name: KFLOOP_S3_SECRET_KEY
            valueFrom:
              secretKeyRef:
                name: kfloop-s3
                key: AWS_SECRET_ACCESS_KEY
        envFrom:
          - configMapRef:
              name: kfloop-config
        ports:
          - containerPort: 8080
            protocol: TCP
        # two processes: the transformer and its monitor process (capture and drift checks, with their own GIL)
        resources:
          requests:
            cpu: 500m
            memory: 1Gi
          limits:
            cpu: "2"
            memory: 2Gi
        securityContext:
          runAsNonRoot: true
          runAsUser: 1000
          runAsGroup: 1000
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: ["ALL"]
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
          - name: tmp
            mountPath: /tmp
    volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 256Mi
"""

"""``KubernetesTarget``: canary rollouts of KServe InferenceServices through the Kubernetes API.

The rollout target for a cluster (see ``kfloop.rollout.actions``). One InferenceService per model, named
after it, in Knative mode (``Serverless`` in older KServe releases, which 0.20 still accepts and
normalizes to ``Knative``), where KServe 0.20 honours ``canaryTrafficPercent``: when
the predictor changes (a new storage URI) the new revision takes that share and the previous
rolled-out revision the rest; removing the field gives the latest revision all traffic (promote),
setting it to 0 gives the previous one all traffic (rollback). RawDeployment/Standard mode ignores
the field, so a canary there is refused.

Which version runs where is kept in annotations of the InferenceService: the version whose bundle
is in the spec, the stable one and the canary; ``status`` maps the predictor's traffic to them
(``kfloop.rollout.targets.isvc_status``). A missing service is created from the base manifest
(``kfloop.rollout.targets.isvc_template``).

Writes are JSON merge patches that carry the ``resourceVersion`` read before, so a concurrent
change makes the API server answer 409 instead of one writer silently undoing the other.
"""

from __future__ import annotations

import json
from pathlib import Path

from kfloop.config import Settings
from kfloop.errors import ConfigError, KfloopError, RegistryError
from kfloop.rollout.targets import isvc_template
from kfloop.rollout.targets.isvc_status import (
    CANARY_VERSION,
    MODE_ANNOTATION,
    MODEL_VERSION,
    ROLLED_BACK_VERSION,
    STABLE_VERSION,
    annotations_of,
    deployment_mode,
    describe,
)
from kfloop.store.registry import VersionRecord

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NO_CANARY_MODES = ("RawDeployment", "Standard")
SERVABLE_SCHEMES = ("s3://", "gs://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://")
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TIMEOUT_SECONDS = 30


class KubernetesTarget:
    """InferenceServices in ``namespace`` (default: the pod's or the kubeconfig context's).

    ``isvc_name`` overrides the service's name (default: the model's); ``api`` is a
    ``kubernetes.client.CustomObjectsApi`` (default: in-cluster config, else kubeconfig);
    ``image`` replaces the base manifest's image when a service is created."""

    name = "kubernetes"

    def __init__(self, namespace: str | None = None, isvc_name: str | None = None, api=None, image: str | None = None):
        self._namespace, self.isvc_name, self._api, self.image = namespace, isvc_name, api, image

    # -- the RolloutTarget protocol --------------------------------------------------------------

    def deploy(self, record: VersionRecord, canary_percent: int | None) -> dict:
        """Create the service serving ``record``, or patch it: all traffic, or a canary share."""
        uri = servable_uri(record)
        name, version = self._isvc(record.name), str(record.version)
        current = self._get(name)
        canary = canary_percent is not None and canary_percent < 100
        if current is None and canary:
            raise RegistryError(
                f"InferenceService {name} does not exist in namespace {self.namespace} yet: "
                "deploy a version without a canary first"
            )
        if current is None:
            obj = isvc_template.inferenceservice(
                name, self.namespace, uri, {MODEL_VERSION: version, STABLE_VERSION: version}, self.image, version
            )
            self._call("create", name, self.api.create_namespaced_custom_object, body=obj)
            return self.status(record.name)
        if canary:
            refuse_canary_outside_serverless(current, canary_percent)
        notes = {
            MODEL_VERSION: version,
            ROLLED_BACK_VERSION: None,
            **({CANARY_VERSION: version} if canary else {STABLE_VERSION: version, CANARY_VERSION: None}),
        }
        predictor = isvc_template.with_storage_uri(current["spec"]["predictor"], uri, version)
        predictor["canaryTrafficPercent"] = canary_percent if canary else None
        self._patch(current, notes, predictor)
        return self.status(record.name)

    def promote(self, model: str) -> dict:
        """The canary takes all traffic: ``canaryTrafficPercent`` is removed."""
        current, canary = self._with_canary(model)
        self._patch(current, {STABLE_VERSION: canary, CANARY_VERSION: None}, {"canaryTrafficPercent": None})
        return self.status(model)

    def rollback(self, model: str) -> dict:
        """All traffic back to the previous revision: ``canaryTrafficPercent: 0``."""
        current, canary = self._with_canary(model)
        self._patch(current, {CANARY_VERSION: None, ROLLED_BACK_VERSION: canary}, {"canaryTrafficPercent": 0})
        return self.status(model)

    def status(self, model: str) -> dict:
        """Versions, traffic shares and readiness of the model's InferenceService."""
        name = self._isvc(model)
        doc = {"model": model, "target": self.name, "namespace": self.namespace, "isvc": name}
        obj = self._get(name)
        if obj is None:
            return {**doc, "exists": False, "stable": None, "canary": None, "ready": False}
        return {**doc, "exists": True, **describe(obj)}

    # -- configuration ---------------------------------------------------------------------------

    @property
    def api(self):
        if self._api is None:
            self._api, detected = connect()
            self._namespace = self._namespace or detected
        return self._api

    @property
    def namespace(self) -> str:
        if self._namespace is None and self._api is None:
            self.api  # noqa: B018 (connecting also detects the namespace)
        return self._namespace or "default"

    def _isvc(self, model: str) -> str:
        return self.isvc_name or model

    # -- API calls -------------------------------------------------------------------------------

    def _get(self, name: str) -> dict | None:
        """The InferenceService ``name``, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(
                GROUP, API_VERSION, self.namespace, PLURAL, name, _request_timeout=TIMEOUT_SECONDS
            )
        except ApiException as e:
            if e.status == 404 and _status(e).get("reason") == "NotFound" and _status(e).get("details"):
                return None  # the object is missing (a missing CRD answers 404 without details)
            raise self._error("get", name, e) from None
        except _transport_errors() as e:
            raise self._error("get", name, e) from None

    def _with_canary(self, model: str) -> tuple[dict, str]:
        name = self._isvc(model)
        current = self._get(name)
        canary = annotations_of(current or {}).get(CANARY_VERSION)
        if not canary:
            raise RegistryError(
                f"InferenceService {name} in namespace {self.namespace} has no canary "
                f"(annotation {CANARY_VERSION}) to promote or roll back"
            )
        return current, canary

    def _patch(self, current: dict, notes: dict, predictor: dict) -> None:
        """JSON merge patch of annotations and predictor (None deletes a key), guarded by the
        resourceVersion read before."""
        meta = current["metadata"]
        body = {
            "metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": notes},
            "spec": {"predictor": predictor},
        }
        self._call("patch", meta["name"], self.api.patch_namespaced_custom_object, name=meta["name"], body=body)

    def _call(self, verb: str, isvc: str, method, **kwargs) -> dict:
        from kubernetes.client.exceptions import ApiException

        try:
            return method(GROUP, API_VERSION, self.namespace, PLURAL, _request_timeout=TIMEOUT_SECONDS, **kwargs)
        except (ApiException, *_transport_errors()) as e:
            raise self._error(verb, isvc, e) from None

    def _error(self, verb: str, name: str, error: Exception) -> KfloopError:
        """A kfloop error that says what failed and what to do about it."""
        from kubernetes.client.exceptions import ApiException

        what = f"InferenceService {name} in namespace {self.namespace}"
        host = getattr(getattr(getattr(self.api, "api_client", None), "configuration", None), "host", "?")
        if not isinstance(error, ApiException):
            return ConfigError(f"cannot reach the Kubernetes API at {host} to {verb} {what}: {error}")
        message = _status_message(error)
        if error.status == 401:
            return ConfigError(
                f"unauthorized: the Kubernetes API at {host} refused the credentials "
                f"(expired or invalid token) to {verb} {what}: {message}"
            )
        if error.status == 403:
            return ConfigError(
                f"forbidden: the ServiceAccount needs {verb} on inferenceservices.{GROUP} in "
                f"namespace {self.namespace} (bind the Role kfloop-pipeline-deployer of "
                f"manifests/base to it): {message}"
            )
        if error.status == 404 and _status(error).get("details"):
            return RegistryError(f"{what} does not exist (deleted while kfloop was changing it?): {message}")
        if error.status == 404:
            return ConfigError(
                f"the Kubernetes API at {host} does not serve {PLURAL}.{GROUP}/{API_VERSION} "
                f"in namespace {self.namespace}: is KServe installed? ({message})"
            )
        if error.status == 409:
            return RegistryError(
                f"conflict on {what} ({verb}): it was changed or created concurrently, "
                f"nothing was applied; check its status and retry: {message}"
            )
        if error.status == 422:
            return ConfigError(f"the Kubernetes API refused to {verb} {what} as invalid: {message}")
        return ConfigError(f"could not {verb} {what}: HTTP {error.status} from {host}: {message}")


def servable_uri(record: VersionRecord) -> str:
    """The version's bundle folder, if KServe's storage initializer can download it."""
    if not record.bundle_uri.startswith(SERVABLE_SCHEMES):
        raise ConfigError(
            f"{record.ref} is stored at {record.bundle_uri}, which KServe cannot download: "
            f"deploy versions registered on object storage (KFLOOP_S3_ENDPOINT set), "
            f"with a URI starting with one of {SERVABLE_SCHEMES}"
        )
    return record.bundle_uri


def refuse_canary_outside_serverless(obj: dict, percent: int) -> None:
    mode = deployment_mode(obj)
    if mode in NO_CANARY_MODES:
        raise ConfigError(
            f"InferenceService {obj['metadata']['name']} runs in {mode} mode, where KServe 0.20 ignores "
            f"canaryTrafficPercent and would send all traffic to the new version at once: a {percent}% canary "
            f"needs {MODE_ANNOTATION}: Knative (Serverless in older KServe releases); deploy without a canary instead"
        )


def connect():
    """A CustomObjectsApi from the in-cluster ServiceAccount, else the kubeconfig; and the namespace
    that configuration implies (None when it names none)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        namespace = SA_NAMESPACE_FILE.read_text().strip() if SA_NAMESPACE_FILE.is_file() else None
    except config.ConfigException as in_cluster:
        try:
            # KUBECONFIG is read now, not when the kubernetes package was imported
            kubeconfig_path = Settings.from_env().kubeconfig
            config.load_kube_config(config_file=kubeconfig_path, client_configuration=configuration)
            _, active = config.list_kube_config_contexts(config_file=kubeconfig_path)
            namespace = (active or {}).get("context", {}).get("namespace")
        except (config.ConfigException, OSError) as kubeconfig:
            raise ConfigError(
                f"no Kubernetes configuration: not running in a cluster ({in_cluster}) and no "
                f"usable kubeconfig ({kubeconfig}); set KUBECONFIG or run in a pod"
            ) from None
    return client.CustomObjectsApi(client.ApiClient(configuration)), namespace


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What the client raises when the API server cannot be reached (refused, DNS, TLS, timeout)."""
    import urllib3

    return urllib3.exceptions.HTTPError, OSError


def _status(error) -> dict:
    """The ``Status`` object of an API error's body ({} when the body is not one)."""
    try:
        doc = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _status_message(error) -> str:
    return _status(error).get("message") or (error.body or error.reason or "").strip()[:300]

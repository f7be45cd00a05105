"""``KubernetesTarget``: canary rollouts of KServe InferenceServices through the Kubernetes API.

The rollout target for a cluster (see ``kfloop.rollout.actions``). One InferenceService per model, named
after it, in Knative mode (``Serverless`` in older KServe releases, which 0.20 still accepts and
normalizes to ``Knative``), where KServe 0.20 honours ``canaryTrafficPercent``: when
the predictor changes (a new storage URI) the new revision takes that share and the previous
rolled-out revision the rest; removing the field gives the latest revision all traffic (promote),
setting it to 0 gives the previous one all traffic (rollback).

Standard mode (``RawDeployment`` in older releases) ignores ``canaryTrafficPercent``; KServe 0.20
added ``spec.canary`` there (kserve#5672): a canary entry ``v<version>`` becomes its own Deployment
and Service ``{isvc}-v<version>-predictor``; promotion makes that entry the predictor (its name too,
so the running pods become the stable ones) and removes it, rollback removes it. KServe 0.20 routes
no traffic to it; kserve#5912 (after 0.20, with the Gateway API: ``enableGatewayApi: true``) gives
the HTTPRoutes weighted ``backendRefs``, and kserve#5984 only once the canary's Deployment is
ready. So, with ``standard_canary`` (``KFLOOP_STANDARD_CANARY``):

- ``auto`` (default): write the entry, wait (``canary_timeout``) until ``status.canaryStatuses``
  reports it ready for the current generation, then read the HTTPRoute ``{isvc}-predictor``
  (``gateway.networking.k8s.io/v1``) for a backendRef to the canary's Service with the requested
  weight. Where there is none (KServe 0.20, no Gateway API, a KServe before 0.20 whose CRD drops the
  field), the entry is removed again and the canary refused, naming kserve#5912 and the
  alternatives; a canary that never gets ready is removed and reported as such.
- ``on``: write the entry and trust the cluster to split (no check, no HTTPRoute read).
- ``off``: refuse a canary in Standard mode before writing anything (KServe 0.20's behaviour).

Which version runs where is kept in annotations of the InferenceService: the version whose bundle
is in the spec, the stable one and the canary; ``status`` maps the predictor's traffic to them
(``kfloop.rollout.targets.isvc_status``). A missing service is created from the base manifest
(``kfloop.rollout.targets.isvc_template``).

Shadow traffic (``shadow``; KServe has no mirroring, kserve#2978): the candidate runs as its own
predictor-only InferenceService ``{isvc}-shadow`` (``names.shadow_isvc_name``), a copy of the model's
predictor with the candidate's bundle, no transformer and no traffic of its own; once it is ready its
cluster-local URL, version and percentage go to the mirror state on the object store
(``kfloop.rollout.mirror``), which the model's transformer polls and mirrors by. 0% (or no version)
removes the mirror state, then the shadow InferenceService (the only delete this target makes).

Writes are JSON merge patches that carry the ``resourceVersion`` read before, so a concurrent
change makes the API server answer 409 instead of one writer silently undoing the other.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kfloop.config import Settings
from kfloop.errors import ConfigError, KfloopError, RegistryError
from kfloop.names import shadow_isvc_name, shadow_records_prefix
from kfloop.rollout.mirror import MirrorState, clear_state, read_state, write_state
from kfloop.rollout.targets import isvc_template
from kfloop.rollout.targets.isvc_status import (
    CANARY_VERSION,
    MODE_ANNOTATION,
    MODEL_VERSION,
    ROLLED_BACK_VERSION,
    STABLE_VERSION,
    STANDARD_POD_LABEL,
    annotations_of,
    canary_entry,
    canary_name,
    canary_status,
    deployment_mode,
    describe,
    is_ready,
    is_standard,
    predictor_service,
)
from kfloop.store.objects import ObjectStore, open_store
from kfloop.store.registry import VersionRecord

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
STANDARD_CANARY_CHOICES = ("auto", "on", "off")
# fields the canary validation of KServe refuses on a canary predictor (it runs fixed replicas,
# derived from the stable's minReplicas and its trafficPercent) or that belong to the stable one
CANARY_DROPPED_FIELDS = ("name", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")
SERVABLE_SCHEMES = ("s3://", "gs://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://")
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TIMEOUT_SECONDS = 30


class KubernetesTarget:
    """InferenceServices in ``namespace`` (default: the pod's or the kubeconfig context's).

    ``isvc_name`` overrides the service's name (default: the model's); ``api`` is a
    ``kubernetes.client.CustomObjectsApi`` (default: in-cluster config, else kubeconfig);
    ``image`` replaces the base manifest's image when a service is created. ``standard_canary``
    (auto, on, off), ``canary_timeout``, ``route_grace`` and ``poll_seconds``: canaries in Standard
    mode (see the module doc); ``route_grace`` is how long a ready canary's HTTPRoute may lag."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str | None = None,
        isvc_name: str | None = None,
        api=None,
        image: str | None = None,
        *,
        standard_canary: str = "auto",
        canary_timeout: float = 600.0,
        route_grace: float = 20.0,
        poll_seconds: float = 2.0,
        clock=time.monotonic,
        sleep=time.sleep,
        store: ObjectStore | None = None,
    ):
        if standard_canary not in STANDARD_CANARY_CHOICES:
            raise ConfigError(
                f"standard_canary {standard_canary!r}: expected one of {', '.join(STANDARD_CANARY_CHOICES)}"
            )
        self._namespace, self.isvc_name, self._api, self.image = namespace, isvc_name, api, image
        self.standard_canary, self.canary_timeout, self.route_grace = standard_canary, canary_timeout, route_grace
        self.poll_seconds, self.clock, self.sleep = poll_seconds, clock, sleep
        self._store = store  # the mirror state of shadow traffic; default: KFLOOP_* storage

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
        if is_standard(current):
            if canary:
                return self._standard_canary(record, current, uri, canary_percent)
            notes = {MODEL_VERSION: version, STABLE_VERSION: version, CANARY_VERSION: None, ROLLED_BACK_VERSION: None}
            predictor = isvc_template.with_storage_uri(current["spec"]["predictor"], uri, version)
            self._patch(current, notes, predictor, canary=None)  # a full deploy ends any canary
            return self.status(record.name)
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
        """The canary takes all traffic: ``canaryTrafficPercent`` is removed (Knative), or the canary
        entry becomes the predictor and is removed (Standard: its pods keep running, now as stable)."""
        current, canary = self._with_canary(model)
        notes = {STABLE_VERSION: canary, CANARY_VERSION: None}
        if is_standard(current):
            entry = self._standard_entry(current, canary)
            predictor = {**current["spec"]["predictor"], **entry["predictor"]}
            self._patch(current, {**notes, MODEL_VERSION: canary}, predictor, canary=None)
        else:
            self._patch(current, notes, {"canaryTrafficPercent": None})
        return self.status(model)

    def rollback(self, model: str) -> dict:
        """All traffic back to the stable version: ``canaryTrafficPercent: 0`` (Knative: the
        previous revision), or the canary entry removed (Standard)."""
        current, canary = self._with_canary(model)
        notes = {CANARY_VERSION: None, ROLLED_BACK_VERSION: canary}
        if is_standard(current):
            self._standard_entry(current, canary)
            self._patch(current, notes, None, canary=None)
        else:
            self._patch(current, notes, {"canaryTrafficPercent": 0})
        return self.status(model)

    def status(self, model: str) -> dict:
        """Versions, traffic shares and readiness of the model's InferenceService."""
        name = self._isvc(model)
        doc = {"model": model, "target": self.name, "namespace": self.namespace, "isvc": name}
        obj = self._get(name)
        if obj is None:
            return {**doc, "exists": False, "stable": None, "canary": None, "ready": False}
        return {**doc, "exists": True, **describe(obj), "shadow": self._shadow_status(model)}

    def shadow(self, model: str, version: int | None, percent: int, record: VersionRecord | None = None) -> dict:
        """Mirror ``percent`` % of the model's requests to ``record`` (of ``version``), run as the
        predictor-only InferenceService ``{isvc}-shadow``; waits until it is ready (``canary_timeout``,
        else it is deleted again). ``version`` None or ``percent`` 0 stops: the mirror state, then the
        shadow InferenceService, are removed."""
        name = self._isvc(model)
        shadow_name = shadow_isvc_name(name)
        if not version or not percent:
            clear_state(self.store, model)
            self._delete(shadow_name)
            return self.status(model)
        if not 0 < percent <= 100:
            raise RegistryError(f"shadow percentage {percent} must be between 0 and 100")
        if record is None or record.name != model or record.version != version:
            raise ConfigError(f"shadow of {model}:{version} needs its registry record (the bundle to serve)")
        current = self._get(name)
        if current is None:
            raise RegistryError(
                f"InferenceService {name} does not exist in namespace {self.namespace}: deploy a version of "
                f"{model} first (its transformer mirrors the traffic)"
            )
        wanted = isvc_template.shadow_inferenceservice(current, shadow_name, servable_uri(record), str(version))
        existing = self._get(shadow_name)
        if existing is None:
            self._call("create", shadow_name, self.api.create_namespaced_custom_object, body=wanted)
        elif annotations_of(existing).get(MODEL_VERSION) != str(version):
            self._patch(existing, wanted["metadata"]["annotations"], wanted["spec"]["predictor"])
        ready = self._await_shadow(shadow_name)
        state = MirrorState(
            model, int(version), int(percent), shadow_url(ready, self.namespace), shadow_name, self.namespace
        )
        write_state(self.store, state)
        return self.status(model)

    def _await_shadow(self, name: str) -> dict:
        """The shadow InferenceService once ready; deleted again (and an error) when it is not within
        ``canary_timeout``."""
        start = self.clock()
        while True:
            obj = self._get(name)
            if obj is None:
                raise RegistryError(f"the shadow InferenceService {name} in namespace {self.namespace} was deleted")
            if is_ready(obj) and (obj.get("status") or {}).get("conditions"):
                return obj
            if self.clock() - start >= self.canary_timeout:
                conditions = (obj.get("status") or {}).get("conditions") or "no status yet"
                self._delete(name)
                raise RegistryError(
                    f"the shadow InferenceService {name} in namespace {self.namespace} did not become ready within "
                    f"{self.canary_timeout:g}s ({conditions}); it was deleted again and nothing is mirrored"
                )
            self.sleep(self.poll_seconds)

    def _shadow_status(self, model: str) -> dict | None:
        """What the mirror state says (None: no shadow traffic)."""
        try:
            state = read_state(self.store, model)
        except KfloopError as e:
            return {"error": f"cannot read the mirror state: {e}"}
        if state is None:
            return None
        records = self.store.uri(shadow_records_prefix(model, state.version))
        return {**state.to_dict(), "records": records}

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(Settings.from_env())
        return self._store

    def revision_label(self, model: str, flavor: str) -> str | None:
        """The scrape label a canary analysis selects a side's metrics by: None (the query set's
        default, Knative's revision label) unless the model's service runs in Standard mode, where
        pods have no revision and no queue-proxy: their ``app`` label, with the ``kfloop`` query set
        only (Knative's metrics do not exist there)."""
        obj = self._get(self._isvc(model))
        if obj is None or not is_standard(obj):
            return None
        if flavor != "kfloop":
            raise ConfigError(
                f"InferenceService {obj['metadata']['name']} runs in {deployment_mode(obj)} mode: its pods have no "
                f"Knative queue-proxy, so the {flavor!r} Prometheus queries find no traffic; analyse it with the "
                f"kfloop query set (the predictor's request_predict_seconds, by the pods' {STANDARD_POD_LABEL!r} label)"
            )
        return STANDARD_POD_LABEL

    # -- Standard mode ---------------------------------------------------------------------------

    def _standard_canary(self, record: VersionRecord, current: dict, uri: str, percent: int) -> dict:
        """Write kfloop's ``spec.canary`` entry for ``record`` at ``percent`` (see the module doc)."""
        name, version = current["metadata"]["name"], str(record.version)
        if self.standard_canary == "off":
            raise ConfigError(
                _refusal(
                    name,
                    deployment_mode(current),
                    percent,
                    "canaries in that mode are off (KFLOOP_STANDARD_CANARY / --standard-canary off)",
                    written=False,
                )
            )
        stable = current["spec"]["predictor"]
        entry_name = canary_name(version)
        if stable.get("name") == entry_name:
            raise RegistryError(f"{record.ref} is the stable predictor of InferenceService {name}, not a canary")
        predictor = isvc_template.with_storage_uri(stable, uri, version)
        for field in (*CANARY_DROPPED_FIELDS, "canaryTrafficPercent"):
            predictor.pop(field, None)
        entry = {"trafficPercent": percent, "predictor": {"name": entry_name, **predictor}}
        notes = {CANARY_VERSION: version, ROLLED_BACK_VERSION: None}
        written = self._patch(current, notes, None, canary=[entry])
        if self.standard_canary == "on":
            return self.status(record.name)
        if not ((written or {}).get("spec") or {}).get("canary"):
            self._remove_canary(name)
            raise ConfigError(
                _refusal(
                    name,
                    deployment_mode(current),
                    percent,
                    "the API server dropped spec.canary (KServe's CRD has it only since 0.20)",
                )
            )
        try:
            self._await_route(name, version, percent)
        except KfloopError as e:  # refused, never ready, or the check itself failed: no canary stays
            try:
                self._remove_canary(name)
            except KfloopError as cleanup:
                raise type(e)(
                    f"{e}; removing the canary entry failed too, remove spec.canary by hand: {cleanup}"
                ) from None
            raise
        return self.status(record.name)

    def _await_route(self, name: str, version: str, percent: int) -> None:
        """Wait until the canary ``v<version>`` is ready and the HTTPRoute sends it ``percent``, else
        raise (the caller removes the entry)."""
        entry_name, mode = canary_name(version), None
        service = predictor_service(name, entry_name)
        route_name = predictor_service(name)
        start, ready_at, seen = self.clock(), None, "no status for the canary yet"
        while True:
            obj = self._get(name)
            if obj is None:
                raise RegistryError(f"InferenceService {name} in namespace {self.namespace} was deleted")
            mode = deployment_mode(obj)
            reported = canary_status(obj, entry_name)
            if reported is not None:
                seen = f"canaryStatuses: {reported}"
            if ready_at is None and reported and reported.get("ready"):
                ready_at = self.clock()
            if ready_at is not None:
                route = self._get_route(route_name)
                if route is None:
                    raise ConfigError(
                        _refusal(
                            name,
                            mode,
                            percent,
                            f"it has no HTTPRoute {route_name} (KServe's Gateway API routing is off: "
                            "enableGatewayApi in the ingress of ConfigMap inferenceservice-config)",
                        )
                    )
                share = route_share(route, service)
                if share == percent:
                    return
                if self.clock() - ready_at >= self.route_grace:
                    found = "no backendRef to" if share is None else f"{share}% for"
                    raise ConfigError(
                        _refusal(
                            name,
                            mode,
                            percent,
                            f"{self.route_grace:g}s after the canary got ready its HTTPRoute {route_name} still has "
                            f"{found} the canary's Service {service}",
                        )
                    )
            elif self.clock() - start >= self.canary_timeout:
                raise RegistryError(
                    f"the canary {entry_name} of InferenceService {name} in namespace {self.namespace} did not "
                    f"become ready within {self.canary_timeout:g}s ({seen}; check the Deployment {service}); "
                    "its canary entry was removed, nothing serves it"
                )
            self.sleep(self.poll_seconds)

    def _remove_canary(self, name: str) -> None:
        """Remove kfloop's canary entry again (read afresh: the controller has written since)."""
        current = self._get(name)
        if current is not None:
            self._patch(current, {CANARY_VERSION: None}, None, canary=None)

    def _standard_entry(self, current: dict, canary: str) -> dict:
        entry = canary_entry(current, canary)
        if entry is None:
            raise RegistryError(
                f"InferenceService {current['metadata']['name']} in namespace {self.namespace} names canary "
                f"version {canary} (annotation {CANARY_VERSION}) but has no spec.canary entry "
                f"{canary_name(canary)}: it was changed outside kfloop; check it with kubectl"
            )
        return entry

    def _get_route(self, name: str) -> dict | None:
        """The HTTPRoute ``name``, or None when it does not exist (or the Gateway API is not installed)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(
                ROUTE_GROUP, ROUTE_VERSION, self.namespace, ROUTE_PLURAL, name, _request_timeout=TIMEOUT_SECONDS
            )
        except ApiException as e:
            if e.status == 404:
                return None  # no such route, or no httproutes resource at all: no Gateway API routing
            if e.status == 403:
                raise ConfigError(
                    f"forbidden: the ServiceAccount needs get on {ROUTE_PLURAL}.{ROUTE_GROUP} in namespace "
                    f"{self.namespace} to check that KServe routes the canary (see the Roles in manifests/), "
                    f"or set KFLOOP_STANDARD_CANARY=on: {_status_message(e)}"
                ) from None
            raise self._error("get", name, e) from None
        except _transport_errors() as e:
            raise self._error("get", name, e) from None

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

    def _delete(self, name: str) -> bool:
        """Delete the InferenceService ``name``; False when it did not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                GROUP, API_VERSION, self.namespace, PLURAL, name, _request_timeout=TIMEOUT_SECONDS
            )
            return True
        except ApiException as e:
            if e.status == 404 and _status(e).get("details"):
                return False
            raise self._error("delete", name, e) from None
        except _transport_errors() as e:
            raise self._error("delete", name, e) from None

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

    def _patch(self, current: dict, notes: dict, predictor: dict | None, **spec) -> dict:
        """JSON merge patch of annotations, predictor and other ``spec`` fields (None deletes a key),
        guarded by the resourceVersion read before; returns the patched object."""
        meta = current["metadata"]
        changes = {**({"predictor": predictor} if predictor is not None else {}), **spec}
        body = {
            "metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": notes},
            "spec": changes,
        }
        return self._call("patch", meta["name"], self.api.patch_namespaced_custom_object, name=meta["name"], body=body)

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


def shadow_url(obj: dict, namespace: str) -> str:
    """The cluster-local URL of a (predictor-only) InferenceService: its predictor's address, else the
    service's, else the predictor Service's name in ``namespace``."""
    status = obj.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    for address in (predictor.get("address"), status.get("address")):
        url = (address or {}).get("url")
        if url:
            return url.rstrip("/")
    return f"http://{predictor_service(obj['metadata']['name'])}.{namespace}.svc.cluster.local"


def route_share(route: dict, service: str) -> int | None:
    """The percentage of the HTTPRoute's traffic that goes to the Service ``service`` (its weight
    over the rule's total; Gateway API's default weight is 1), the same in every rule with backends;
    None when a rule has no backendRef to it or the rules disagree."""
    shares = set()
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if not refs:
            continue
        weights = [(r.get("name"), r.get("kind", "Service"), int(r.get("weight", 1))) for r in refs]
        mine = sum(w for n, kind, w in weights if n == service and kind == "Service")
        if not any(n == service and kind == "Service" for n, kind, _ in weights):
            return None
        total = sum(w for _, _, w in weights)
        shares.add(round(100 * mine / total) if total else 0)
    return shares.pop() if len(shares) == 1 else None


def _refusal(name: str, mode: str | None, percent: int, reason: str, written: bool = True) -> str:
    """Why a Standard-mode canary is refused: ``reason`` the cluster does not route it (``written``:
    the entry was written and removed again), else canaries are off."""
    cause = (
        f"where this cluster's KServe does not route traffic to a spec.canary entry: {reason}; "
        "the canary entry was removed again"
        if written
        else f"and {reason}; nothing was written"
    )
    return (
        f"a {percent}% canary of InferenceService {name} is refused: it runs in {mode} mode, {cause}. "
        "KServe 0.20 ignores canaryTrafficPercent in this mode and creates a canary's Deployment without "
        "routing traffic to it; weighted HTTPRoutes come with kserve#5912 (the KServe release after 0.20, "
        "with enableGatewayApi: true). "
        f"Alternatives: serve the model in Knative mode ({MODE_ANNOTATION}: Knative; Serverless in older KServe "
        "releases), where canaryTrafficPercent splits traffic, or deploy without a canary. "
        "KFLOOP_STANDARD_CANARY=on (--standard-canary on) writes the canary without this check"
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

"""What a KServe InferenceService object says about a kfloop rollout: versions, traffic, readiness.

kfloop records versions in annotations of the InferenceService: ``MODEL_VERSION`` is the version
whose bundle is in the predictor spec (the latest revision), ``STABLE_VERSION`` the one serving the
rest of the traffic, ``CANARY_VERSION`` the one on a canary share (absent when there is none), and
``ROLLED_BACK_VERSION`` the last canary rolled back.

Traffic shares come from the controller's ``status.components.predictor.traffic`` (Knative's
route: the entry with ``latestRevision: true`` is the latest ready revision, tagged ``latest``; the
previous rolled-out one is tagged ``prev``); before the controller reported any, from the spec's
``canaryTrafficPercent``. The latest revision is the spec's version once the service is ``ready``
(its latest created revision is its latest ready one); until then the shares may still be those of
the revisions before.

In Standard mode (``RawDeployment`` in older releases) there are no revisions: KServe 0.20+ runs
each entry of ``spec.canary`` (``{trafficPercent, predictor: {name, ...}}``) as a Deployment and
Service ``{isvc}-{name}-predictor`` next to the stable ``{isvc}[-{predictor.name}]-predictor``, and
reports ``status.canaryStatuses`` (``[{name, ready, trafficPercent}]``) and the aggregate condition
``CanaryPredictorReady``. kfloop names its canary entry ``v<version>``. The canary's share is the
reported ``trafficPercent`` once its Deployment is ready (KServe routes nothing to a canary that is
not, kserve#5984), else 0; whether the cluster routes it at all is checked by the target from the
HTTPRoute (``kfloop.rollout.targets.kubernetes``). Each side's ``revision`` is the ``app`` label of
its pods (``isvc.<deployment>``), which a canary analysis selects its metrics by in Standard mode.
"""

from __future__ import annotations

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODEL_VERSION = "kfloop.io/model-version"
STABLE_VERSION = "kfloop.io/stable-version"
CANARY_VERSION = "kfloop.io/canary-version"
ROLLED_BACK_VERSION = "kfloop.io/rolled-back-version"


STANDARD_MODES = ("Standard", "RawDeployment")
CANARY_CONDITION = "CanaryPredictorReady"
STANDARD_POD_LABEL = "app"  # KServe's RawDeploymentAppLabel: "isvc." + the Deployment's name


def annotations_of(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("annotations") or {}


def deployment_mode(obj: dict) -> str | None:
    """The KServe deployment mode: the annotation, else what the controller reported."""
    return annotations_of(obj).get(MODE_ANNOTATION) or (obj.get("status") or {}).get("deploymentMode")


def describe(obj: dict) -> dict:
    """``{"stable", "canary", "ready", "revisions", ...}`` of an InferenceService (see module doc)."""
    notes = annotations_of(obj)
    model, stable, canary = (_version(notes.get(key)) for key in (MODEL_VERSION, STABLE_VERSION, CANARY_VERSION))
    if is_standard(obj):
        return _describe_standard(obj, stable, canary)
    predictor = _predictor_status(obj)
    traffic = predictor.get("traffic") or []
    latest = _latest_share(obj, traffic)
    if canary is not None:
        shares = {
            "canary": {"version": canary, "percent": latest},
            "stable": {"version": stable, "percent": 100 - latest} if stable is not None else None,
        }
    else:
        stable_share = latest if stable == model else 100 - latest
        shares = {
            "canary": None,
            "stable": {"version": stable, "percent": stable_share} if stable is not None else None,
        }
    return {
        **shares,
        "ready": is_ready(obj),
        "model_version": model,
        "rolled_back_version": _version(notes.get(ROLLED_BACK_VERSION)),
        "deployment_mode": deployment_mode(obj),
        "url": (obj.get("status") or {}).get("url"),
        "traffic_from": "status" if traffic else "spec",
        "revisions": [_revision(entry, model, stable) for entry in traffic],
    }


def is_ready(obj: dict) -> bool:
    """Ready condition True, for the current generation, with the latest created revision ready."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    predictor = _predictor_status(obj)
    created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    return (
        conditions.get("Ready") == "True"
        and (generation is None or observed is None or observed >= generation)
        and (created is None or ready is None or created == ready)
    )


def is_standard(obj: dict) -> bool:
    return deployment_mode(obj) in STANDARD_MODES


def canary_name(version: int | str) -> str:
    """The name of kfloop's ``spec.canary`` entry for a version (a DNS label: ``v<version>``)."""
    return f"v{version}"


def predictor_service(isvc: str, predictor_name: str | None = None) -> str:
    """KServe's ``PredictorServiceName``: the Deployment and Service of a (named) predictor."""
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


def canary_entry(obj: dict, version: int | str | None) -> dict | None:
    """kfloop's ``spec.canary`` entry for ``version`` (None when there is none)."""
    if version is None:
        return None
    entries = ((obj.get("spec") or {}).get("canary")) or []
    return next((e for e in entries if (e.get("predictor") or {}).get("name") == canary_name(version)), None)


def canary_status(obj: dict, name: str) -> dict | None:
    """The controller's ``status.canaryStatuses`` entry of canary ``name``, for the current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return None  # the controller has not seen the current spec yet
    return next((s for s in status.get("canaryStatuses") or [] if s.get("name") == name), None)


def _describe_standard(obj: dict, stable: int | None, canary: int | None) -> dict:
    name = obj["metadata"]["name"]
    spec_predictor = (obj.get("spec") or {}).get("predictor") or {}
    entry = canary_entry(obj, canary)
    reported = canary_status(obj, canary_name(canary)) if entry else None
    ready = bool(reported and reported.get("ready"))
    percent = int(reported.get("trafficPercent") or 0) if ready else 0
    sides = [("stable", stable, predictor_service(name, spec_predictor.get("name")), 100 - percent)]
    if canary is not None:
        sides.append(("canary", canary, predictor_service(name, canary_name(canary)), percent))
    revisions = [
        {
            "revision": f"isvc.{deployment}",
            "deployment": deployment,
            "percent": share,
            "tag": tag,
            "latest": tag == "canary",
            "version": version,
        }
        for tag, version, deployment, share in sides
        if version is not None
    ]
    return {
        "canary": {"version": canary, "percent": percent, "ready": ready} if canary is not None else None,
        "stable": {"version": stable, "percent": 100 - percent} if stable is not None else None,
        "ready": is_ready(obj) and (canary is None or ready),
        "model_version": stable,
        "rolled_back_version": _version(annotations_of(obj).get(ROLLED_BACK_VERSION)),
        "deployment_mode": deployment_mode(obj),
        "url": (obj.get("status") or {}).get("url"),
        "traffic_from": "status" if reported else "spec",
        "revision_label": STANDARD_POD_LABEL,
        "canary_bypasses_transformer": canary is not None and bool((obj.get("spec") or {}).get("transformer")),
        "revisions": revisions,
    }


def _latest_share(obj: dict, traffic: list[dict]) -> int:
    if traffic:
        return sum(int(t.get("percent") or 0) for t in traffic if t.get("latestRevision"))
    percent = ((obj.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    return 100 if percent is None else int(percent)


def _revision(entry: dict, model: int | None, stable: int | None) -> dict:
    latest = bool(entry.get("latestRevision"))
    return {
        "revision": entry.get("revisionName"),
        "percent": int(entry.get("percent") or 0),
        "tag": entry.get("tag"),
        "latest": latest,
        "version": model if latest else stable,
    }


def _predictor_status(obj: dict) -> dict:
    return ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}


def _version(raw: str | None) -> int | None:
    return int(raw) if raw is not None and str(raw).isdigit() else None

"""Names that cross a process boundary, defined once, and the one check of external names.

Everything here is read by one process and written by another: HTTP headers and paths, CloudEvent
types, the object-store key layout. A name changes here or nowhere. External strings that become part
of a path or an object key (model names, event ids, run names, revisions) go through
``validate_model_name`` (refuses) or ``key_segment`` (maps to a safe segment) first.

A leaf: imports nothing from kfloop but ``kfloop.errors``.
"""

from __future__ import annotations

import hashlib
import re

from kfloop.errors import InvalidRequest, RegistryError

# HTTP headers
REQUEST_ID_HEADER = "x-request-id"  # KServe's and Istio's request id; kfloop captures rows under it
REVISION_HEADER = "x-kfloop-revision"  # stable|canary|shadow: the revision's role, set by the gateway
MODEL_VERSION_HEADER = "x-kfloop-model-version"  # set by kfloop's predictor: the version that answered
DECISION_HEADER = "x-kfloop-decision"  # the trigger's answer to an event: start|waiting|duplicate|...
DECISION_REASON_HEADER = "x-kfloop-decision-reason"  # ... and why (ASCII, at most 200 characters)
RUN_HEADER = "x-kfloop-run"  # ... and the name of the run in flight for the model, if any

# HMAC-SHA256 of the REVISION_HEADER value with the control token: a transformer trusts REVISION_HEADER
# only when this matches (the gateway signs it), so a client reaching a transformer directly cannot set it
REVISION_SIGNATURE_HEADER = "x-kfloop-revision-signature"
AUTHORIZATION_HEADER = "authorization"  # ``Bearer <control token>`` on the control plane (kfloop.auth)

# Limits on ids that clients choose (request ids are echoed in a response header; event ids become keys)
MAX_REQUEST_ID_BYTES = 256  # x-request-id, ce-id and the V2 body "id": longer is HTTP 400
MAX_EVENT_ID_BYTES = 256  # a CloudEvent's id: longer is HTTP 400
MAX_SEGMENT_CHARS = 128  # key_segment: a longer segment keeps a prefix and gets a hash of the whole

# Limits on the bodies the trigger takes (events, feedback): deeper or longer is HTTP 400, nothing stored
MAX_JSON_DEPTH = 32  # nesting of objects and lists in an event or a feedback body
MAX_FEEDBACK_LABELS = 10_000  # labels in one feedback batch (POST /v1/feedback or io.kfloop.feedback)

# The control plane's bearer token: ``kfloop serve`` writes it (mode 0600) as this file in KFLOOP_HOME
# unless KFLOOP_CONTROL_TOKEN_FILE names another (kfloop.config.Settings.control_token_path)
CONTROL_TOKEN_FILE = "control-token"

# HTTP paths of the local gateway's admin API and of the trigger service
ADMIN_PATH = "/kfloop/v1"
ADMIN_MODELS_PATH = f"{ADMIN_PATH}/models"  # GET models, models/NAME; POST models/NAME/deploy|promote|...
ADMIN_EVENTS_PATH = f"{ADMIN_PATH}/events"  # the gateway's CloudEvents sink
TRIGGER_FEEDBACK_PATH = "/v1/feedback"
TRIGGER_STATUS_PATH = "/v1/status"
HEALTH_PATH = "/healthz"
TRIGGER_DEAD_LETTERS_PATH = "/v1/dead-letters"  # the Knative Triggers' deadLetterSink (manifests/base/trigger-*.yaml)

# Where ``kfloop serve``'s gateway listens unless told otherwise; ``kfloop rollout`` and the trigger call it there
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_GATEWAY = f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}"

# Rollout strategies: flag values (``kfloop rollout analyze --strategy``, the trigger's ``--auto_rollout``)
# and the ``strategy`` of stored rollout records and decision events; the plans are ``kfloop.rollout.analysis``'s
ROLLOUT_STRATEGIES = ("canary", "linear", "all-at-once", "blue-green")

# Batch inference (``kfloop batch``): the columns of its prediction and rejects files, the revision its
# capture records carry, and the marker of the progress lines its pipeline step prints (``kfloop batch
# run`` shows them)
BATCH_ROW_COLUMN = "row"  # the row number in the input (0-based), when the input has no id column
BATCH_REQUEST_ID_COLUMN = "request_id"  # the row's capture id, "<batch id>:<row>": feedback labels use it
BATCH_PREDICTION_COLUMN = "prediction"  # the predicted class label, or the value for regression
BATCH_PROBABILITY_PREFIX = "probability_"  # + class label: the class probabilities, as the predictor answers
BATCH_REASON_COLUMN = "reason"  # in the rejects file: why the row was not predicted
BATCH_REVISION = "batch"  # the ``revision`` of batch capture records (online: stable, canary)
PROGRESS_MARKER = "kfloop-progress: "  # a pipeline step's progress line, shown by the CLI

# CloudEvent types
DRIFT_DETECTED = "io.kfloop.drift.detected"
QUALITY_DEGRADED = "io.kfloop.quality.degraded"
FEEDBACK = "io.kfloop.feedback"
RETRAIN_STARTED = "io.kfloop.retrain.started"
RETRAIN_FINISHED = "io.kfloop.retrain.finished"
ROLLOUT_DECISION = "io.kfloop.rollout.decision"
DATA_QUALITY_VIOLATED = "io.kfloop.data_quality.violated"
PREDICTION_DRIFT_DETECTED = "io.kfloop.prediction_drift.detected"
MULTIVARIATE_DRIFT_DETECTED = "io.kfloop.multivariate_drift.detected"
ATTRIBUTION_DRIFT_DETECTED = "io.kfloop.attribution_drift.detected"
BIAS_DRIFT_DETECTED = "io.kfloop.bias_drift.detected"
ESTIMATED_QUALITY_DROPPED = "io.kfloop.estimated_quality.dropped"

# Monitoring signals (kfloop.monitoring.signals) and the CloudEvent type each emits when it alerts
SIGNAL_EVENT_TYPES = {
    "feature_drift": DRIFT_DETECTED,
    "data_quality": DATA_QUALITY_VIOLATED,
    "prediction_drift": PREDICTION_DRIFT_DETECTED,
    "multivariate_drift": MULTIVARIATE_DRIFT_DETECTED,
    "attribution_drift": ATTRIBUTION_DRIFT_DETECTED,
    "bias_drift": BIAS_DRIFT_DETECTED,
    "quality": QUALITY_DEGRADED,
    "estimated_quality": ESTIMATED_QUALITY_DROPPED,
}
SIGNALS = tuple(SIGNAL_EVENT_TYPES)

# Object-store key layout (one top-level folder per kind of object)
MODELS_PREFIX = "models"  # models/NAME/{versions,stages}/NNNNNN.json, models/NAME/bundles/ID/...
# models/NAME/aliases/ALIAS/NNNNNN.json: an alias's moves, numbered; the highest number is where it points
CAPTURES_PREFIX = "captures"  # captures/MODEL/VERSION/DAY/STAMP-ID-SHA.{jsonl,parquet}
FEEDBACK_PREFIX = "feedback"  # feedback/MODEL/DAY/STAMP-ID.jsonl
EVENTS_PREFIX = "events"  # events/MODEL/EVENT_ID.json
RETRAINING_PREFIX = "retraining"  # retraining/MODEL/STAMP.parquet: a run's training data
DEAD_LETTERS_PREFIX = "dead-letters"  # dead-letters/DAY/STAMP-ID.json: events Knative could not deliver
TRIGGER_PREFIX = "trigger"  # trigger/MODEL/state.json, trigger/MODEL/rollouts/NNNNNN.json
OUTBOX_PREFIX = "outbox"  # outbox/NAME/STAMP-UID.json: events a stopping pod could not deliver (sealed)
# windows/MODEL/VERSION/DAY/STAMP-UID-SHA.jsonl: a summary of every checked drift window (kfloop.monitoring.window_log)
WINDOWS_PREFIX = "windows"
# Mirrored (shadow) traffic on a cluster (kfloop.rollout.mirror): mirror/MODEL/state.json says where the model's
# transformer mirrors to (sealed JSON; a rollout writes it, the transformer polls it); the candidate's answers go to
# shadow/MODEL/VERSION/DAY/STAMP-UID-SHA.jsonl (records of serving/local/shadow.py's format, plus the request id)
MIRROR_PREFIX = "mirror"
SHADOW_PREFIX = "shadow"
SHADOW_ISVC_SUFFIX = "-shadow"  # the candidate's own InferenceService: {isvc}-shadow (shadow_isvc_name)
MAX_SHADOW_ISVC_CHARS = 47  # Knative names {name}-predictor-00001 within 63 characters

MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
ALIAS_PATTERN = MODEL_NAME_PATTERN  # aliases are key segments and read well in NAME@ALIAS
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def validate_model_name(name: str) -> str:
    """``name`` if it is a valid model name (it becomes a Kubernetes name and a key segment)."""
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.match(name):
        raise RegistryError(
            f"model name {name!r} is not valid: use 1-40 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (it becomes a Kubernetes name)"
        )
    return name


def validate_alias_name(alias: str) -> str:
    """``alias`` if it has the form of a registry alias (the registry also refuses stage names)."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias):
        raise RegistryError(
            f"alias {alias!r} is not valid: use 1-40 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return alias


def key_segment(text: str, limit: int = MAX_SEGMENT_CHARS) -> str:
    """``text`` made usable as one path or key segment: anything but ``[A-Za-z0-9._=-]`` becomes ``_``,
    a segment of only dots (``.``, ``..``) becomes ``_``, so it can never leave its folder, and one
    longer than ``limit`` (default ``MAX_SEGMENT_CHARS``) keeps its first ``limit - 17`` characters and
    gets ``-`` and 16 hex digits of the SHA-256 of ``text`` (file systems refuse names over 255 bytes)."""
    cleaned = _UNSAFE.sub("_", text)
    cleaned = cleaned if cleaned.strip(".") else "_"
    if len(cleaned) > limit:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cleaned = f"{cleaned[: limit - 17]}-{digest}"
    return cleaned


def validate_request_id(value: str, what: str = "x-request-id") -> str:
    """``value`` if it can be a request id: printable ASCII (it is echoed in a response header) of at
    most ``MAX_REQUEST_ID_BYTES``; ``InvalidRequest`` naming ``what`` otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string; got {value!r}")
    if len(value) > MAX_REQUEST_ID_BYTES:
        raise InvalidRequest(
            f"{what} is {len(value.encode('utf-8', 'surrogatepass'))} bytes long: the limit is "
            f"{MAX_REQUEST_ID_BYTES} bytes ({value[:40]!r}...)"
        )
    if not (value.isascii() and value.isprintable()):
        raise InvalidRequest(f"{what} {value[:100]!r} is not printable ASCII; send an id that fits an HTTP header")
    return value


def validate_event_id(value: str) -> str:
    """``value`` if it can be a CloudEvent id kfloop keeps: 1 to ``MAX_EVENT_ID_BYTES`` printable ASCII
    characters, no ``/`` or ``\\``, not only dots; ``InvalidRequest`` naming it otherwise. (The id
    becomes part of an event-log key and of a run name: ``key_segment`` maps it too.)"""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"CloudEvent id must be a non-empty string; got {value!r}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_EVENT_ID_BYTES:
        raise InvalidRequest(
            f"CloudEvent id is {size} bytes long: the limit is {MAX_EVENT_ID_BYTES} bytes ({value[:40]!r}...)"
        )
    if not (value.isascii() and value.isprintable()) or "/" in value or "\\" in value or not value.strip("."):
        raise InvalidRequest(
            f"CloudEvent id {value[:100]!r} is not valid: use printable ASCII without '/' or '\\', "
            "not only dots (a UUID is fine)"
        )
    return value


def run_name(model: str, event_id: str) -> str:
    """The name of the retraining run an event starts: one safe key segment (it names the run's folder
    and data file), at most 120 characters."""
    return key_segment(f"kfloop-{model}-{event_id}", limit=120)


def model_version_key(name: str, version: int) -> str:
    return f"{MODELS_PREFIX}/{name}/versions/{version:06d}.json"


def model_stage_key(name: str, version: int) -> str:
    return f"{MODELS_PREFIX}/{name}/stages/{version:06d}.json"


def model_aliases_prefix(name: str, alias: str | None = None) -> str:
    prefix = f"{MODELS_PREFIX}/{name}/aliases/"
    return prefix + (f"{alias}/" if alias is not None else "")


def model_alias_key(name: str, alias: str, sequence: int) -> str:
    return f"{model_aliases_prefix(name, alias)}{sequence:06d}.json"


def outbox_prefix(name: str) -> str:
    return f"{OUTBOX_PREFIX}/{key_segment(name)}/"


def captures_prefix(model: str, version: str | None = None) -> str:
    prefix = f"{CAPTURES_PREFIX}/{key_segment(model)}/"
    return prefix + (f"{key_segment(str(version))}/" if version is not None else "")


def windows_prefix(model: str, version: str | None = None) -> str:
    prefix = f"{WINDOWS_PREFIX}/{key_segment(model)}/"
    return prefix + (f"{key_segment(str(version))}/" if version is not None else "")


def feedback_prefix(model: str) -> str:
    return f"{FEEDBACK_PREFIX}/{key_segment(model)}/"


def events_prefix(model: str) -> str:
    return f"{EVENTS_PREFIX}/{key_segment(model)}/"


def event_key(model: str, event_id: str) -> str:
    return f"{events_prefix(model)}{key_segment(str(event_id))}.json"


def trigger_state_key(model: str) -> str:
    return f"{TRIGGER_PREFIX}/{key_segment(model)}/state.json"


def auto_rollouts_prefix(model: str | None = None) -> str:
    return f"{TRIGGER_PREFIX}/{key_segment(model)}/rollouts/" if model else f"{TRIGGER_PREFIX}/"


def auto_rollout_key(model: str, version: int) -> str:
    return f"{auto_rollouts_prefix(model)}{version:06d}.json"


def dead_letter_key(day: str, stamp: str, event_id: str) -> str:
    """``dead-letters/DAY/STAMP-ID.json``: one event a Knative Trigger gave up delivering."""
    return f"{DEAD_LETTERS_PREFIX}/{key_segment(day)}/{key_segment(stamp)}-{key_segment(str(event_id))}.json"


def mirror_state_key(model: str) -> str:
    return f"{MIRROR_PREFIX}/{key_segment(model)}/state.json"


def shadow_records_prefix(model: str, version: int | str | None = None) -> str:
    prefix = f"{SHADOW_PREFIX}/{key_segment(model)}/"
    return prefix + (f"{key_segment(str(version))}/" if version is not None else "")


_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def shadow_isvc_name(isvc: str) -> str:
    """The InferenceService a shadow candidate of InferenceService ``isvc`` runs as: ``{isvc}-shadow``,
    refused (``RegistryError``) unless it is a DNS-1035 label of at most ``MAX_SHADOW_ISVC_CHARS``."""
    name = f"{isvc}{SHADOW_ISVC_SUFFIX}"
    if not isinstance(isvc, str) or not _DNS_LABEL.match(name) or len(name) > MAX_SHADOW_ISVC_CHARS:
        raise RegistryError(
            f"InferenceService {isvc!r} cannot have a shadow: {name!r} must be lowercase letters, digits and '-', "
            f"starting with a letter, at most {MAX_SHADOW_ISVC_CHARS} characters (Knative adds -predictor-00001)"
        )
    return name

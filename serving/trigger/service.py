"""The retraining trigger service: CloudEvents in (Knative Triggers POST them to ``/``), runs out.

Endpoints:

- ``POST /``: one CloudEvent, binary or structured mode, of a monitoring signal's type
  (``kfloop.names.SIGNAL_EVENT_TYPES``: ``io.kfloop.drift.detected``, ``io.kfloop.quality.degraded``,
  ``io.kfloop.data_quality.violated``, ...; the per-signal policy, ``--policy_file`` / ``--signal_rule``,
  says whether each only alerts or may start a run) or ``io.kfloop.feedback``. Answered as Knative Eventing's data
  plane contract expects of a recipient (a broker treats a non-empty reply that is not a CloudEvent
  as a failed delivery, HTTP 502): ``202 Accepted`` with an empty body (never a reply event), the
  policy's decision in the headers ``x-kfloop-decision`` (start, waiting, duplicate, ...),
  ``x-kfloop-decision-reason`` and ``x-kfloop-run``. A caller that asks with ``Accept:
  application/json`` gets the whole decision as a JSON body with HTTP 200 instead. A malformed
  event or another type is HTTP 400 (``{"error": ...}``, which Knative does not retry and hands
  to the dead-letter sink) and changes nothing; so is an event naming a model with no registered
  version (HTTP 422, not 404, which Knative would retry; ``--new_models`` names models that may be
  trained before their first version); a store that is down is a 503, which Knative retries.
- ``POST /v1/dead-letters``: the Knative Triggers' ``deadLetterSink``: an event Knative gave up
  delivering (with its ``knativeerrorcode`` / ``knativeerrordest`` / ``knativeerrordata``
  extensions) is kept on the object store under ``dead-letters/DAY/``, counted
  (``kfloop_trigger_events_total{outcome="dead_letter"}``) and logged; ``202``.
- ``POST /v1/feedback``: ``{"model": NAME, "labels": [{"request_id", "label", "time"?}, ...]}``;
  unknown request ids or labels of the wrong type are HTTP 400 and nothing is stored; so is a batch
  of more than ``MAX_FEEDBACK_LABELS`` labels. Any JSON body (an event, its data, feedback) nested
  deeper than ``MAX_JSON_DEPTH`` levels is HTTP 400 too (``kfloop.names``).
- ``GET /v1/status[?model=NAME]``: the policy, each model's state and its run in flight.
- ``GET /healthz``, ``GET /metrics`` (Prometheus).
- Any other path or method: 404 or 405, ``{"error": ...}`` as every error here.

Feedback and status are the control plane: they want ``Authorization: Bearer <control token>``
(``kfloop.auth``; the token file ``KFLOOP_CONTROL_TOKEN_FILE``, by default ``<KFLOOP_HOME>/control-token``,
is written at start when there is none), same-origin requests and JSON bodies
(``kfloop.serving.control_plane``). ``/`` stays open: locally the transformers on 127.0.0.1 post to
it, on a cluster the Knative broker, admitted by a NetworkPolicy (``manifests/base/networkpolicy-trigger.yaml``).
With ``--oidc_issuer`` and ``--oidc_audience`` (a cluster whose Knative Eventing has
``authentication-oidc`` on: ``manifests/overlays/oidc``) ``/`` and ``/v1/dead-letters`` want the
broker's OIDC token (``kfloop.oidc``; 401 without, which Knative does not retry); the control token is
not one. With ``--sink_auth`` the emitted events carry the control token (``kfloop serve``'s sink is its
gateway's authenticated ``/kfloop/v1/events``).

With ``--auto_rollout STRATEGY`` each registered version is then rolled out through a canary
analysis (``kfloop.serving.trigger.rollout_flags``); ``/v1/status?model=NAME`` lists those rollouts.

The work is ``kfloop.retraining.trigger.RetrainTrigger``; a background thread launches and polls the
runs; events go to ``--sink_url`` (or ``K_SINK``) through a durable outbox. State lives on the
object store (``KFLOOP_HOME`` or S3), so a restarted service carries on. One worker process.

Run: ``python -m kfloop.serving.trigger.service --port 8080`` (``--target kfp`` with ``KFLOOP_KFP_HOST``).
"""

from __future__ import annotations

import argparse
import base64
import logging
import shlex
import signal
import threading
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kfloop import pipelines
from kfloop.auth import TokenFile, ensure_token
from kfloop.config import Settings
from kfloop.errors import ConfigError, InvalidRequest, KfloopError, ModelNotFound, StorageError
from kfloop.events.cloudevents import parse_event, parse_json
from kfloop.events.outbox import Outbox
from kfloop.names import (
    AUTHORIZATION_HEADER,
    DECISION_HEADER,
    DECISION_REASON_HEADER,
    FEEDBACK,
    HEALTH_PATH,
    RUN_HEADER,
    TRIGGER_DEAD_LETTERS_PATH,
    TRIGGER_FEEDBACK_PATH,
    TRIGGER_STATUS_PATH,
    dead_letter_key,
)
from kfloop.oidc import OidcVerifier, Unauthorized, http_fetcher
from kfloop.retraining.policy import (
    DATA_STRATEGIES,
    SIGNAL_TYPES,
    TUNING_CHOICES,
    RetrainPolicy,
    load_rules,
    parse_rule_flag,
)
from kfloop.retraining.quality_signal import QualityOptions
from kfloop.retraining.runners import DEFAULT_LOCAL_COMMAND, KfpRunner, LocalRunner
from kfloop.retraining.trigger import RetrainTrigger
from kfloop.serving.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from kfloop.serving.control_plane import ControlPlaneGuard
from kfloop.serving.http_protocol import CoalescingHttpToolsProtocol
from kfloop.serving.json_errors import EXCEPTION_HANDLERS
from kfloop.serving.trigger.metrics import metrics_response
from kfloop.serving.trigger.rollout_flags import add_flags as add_rollout_flags
from kfloop.serving.trigger.rollout_flags import make_auto_rollout

log = logging.getLogger(__name__)
STATUS = ((Unauthorized, 401), (InvalidRequest, 400), (ModelNotFound, 404), (StorageError, 503), (KfloopError, 500))
# On the CloudEvents route an unknown model is 422, not 404: a Knative broker retries 404 (and 408, 409,
# 429, 5xx), and no retry can make a model exist; 422 goes straight to the dead-letter sink
EVENT_STATUS = ((ModelNotFound, 422), *STATUS)


def build_app(
    trigger: RetrainTrigger,
    tick_seconds: float,
    token: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    oidc: OidcVerifier | None = None,
) -> Starlette:
    """The ASGI app around ``trigger``, with its background run worker in the lifespan; the feedback and
    status routes want ``token``; with ``oidc`` the CloudEvents routes want a broker's OIDC token."""

    async def sender_verified(request: Request) -> None:
        if oidc is not None:
            await run_in_threadpool(oidc.verify_header, request.headers.get(AUTHORIZATION_HEADER))

    async def receive_event(request: Request) -> Response:
        event: dict = {}
        try:
            await sender_verified(request)
            event = parse_event(request.headers, await request.body())
            return _decision(await run_in_threadpool(trigger.handle_event, event), request)
        except KfloopError as e:
            return _error(e, trigger, event.get("type"), EVENT_STATUS)

    async def dead_letter(request: Request) -> Response:
        event: dict = {}
        try:
            await sender_verified(request)
            event = parse_event(request.headers, await request.body())
            await run_in_threadpool(_keep_dead_letter, trigger, event)
        except KfloopError as e:
            return _error(e, trigger, event.get("type"))
        return Response(status_code=202)

    async def feedback(request: Request) -> Response:
        try:
            body = _json_object(await request.body())
            return JSONResponse(await run_in_threadpool(trigger.handle_feedback, body.get("model"), body.get("labels")))
        except KfloopError as e:
            return _error(e, trigger, FEEDBACK)

    async def status(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(trigger.status, request.query_params.get("model")))
        except KfloopError as e:
            return _error(e, None, None)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "target": trigger.runner.target, "outbox": trigger.outbox.stats()})

    async def metrics(request: Request) -> Response:
        return metrics_response(trigger)

    @asynccontextmanager
    async def lifespan(app):
        worker = RunWorker(trigger, tick_seconds)
        trigger.outbox.start()
        worker.start()
        if trigger.auto_rollout is not None:
            trigger.auto_rollout.resume()
        try:
            yield
        finally:
            if trigger.auto_rollout is not None:
                trigger.auto_rollout.stop()
            worker.stop()
            trigger.outbox.stop()
            trigger.runner.stop()
            log.info("trigger stopped (%d events waiting in the outbox)", trigger.outbox.depth)

    routes = [
        Route("/", receive_event, methods=["POST"]),
        Route(TRIGGER_DEAD_LETTERS_PATH, dead_letter, methods=["POST"]),
        Route(TRIGGER_FEEDBACK_PATH, feedback, methods=["POST"]),
        Route(TRIGGER_STATUS_PATH, status),
        Route(HEALTH_PATH, healthz),
        Route("/metrics", metrics),
    ]
    guarded = (TRIGGER_FEEDBACK_PATH, TRIGGER_STATUS_PATH)
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,  # an unknown path (404) or method (405) as {"error": ...} too
        middleware=[
            Middleware(ControlPlaneGuard, token=token, protects=lambda path: path.rstrip("/") in guarded),
            Middleware(BodySizeLimit, max_bytes=max_body_bytes),
        ],
    )


class RunWorker:
    """Calls ``trigger.step`` every ``tick_seconds`` (and at once when an event starts a run)."""

    def __init__(self, trigger: RetrainTrigger, tick_seconds: float):
        self.trigger, self.tick_seconds = trigger, tick_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trigger-runs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.trigger.wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.trigger.wake.clear()
            try:
                self.trigger.step()
            except Exception:  # noqa: BLE001 - the store may be down; keep trying
                log.exception("trigger run worker step failed")
            self.trigger.wake.wait(self.tick_seconds)


def _decision(out: dict, request: Request) -> Response:
    """The answer to a delivered event: the decision as JSON when the caller asks for it, else an
    empty 202 with the decision in headers (what a Knative broker or channel accepts)."""
    if _wants_json(request.headers.get("accept", "")):
        return JSONResponse(out)
    run = out.get("in_flight") or {}
    headers = {DECISION_HEADER: str(out.get("action", "")), DECISION_REASON_HEADER: _header_text(out.get("reason"))}
    if run.get("name"):
        headers[RUN_HEADER] = _header_text(run["name"])
    return Response(status_code=202, headers=headers)


def _wants_json(accept: str) -> bool:
    """True when ``Accept`` names application/json itself (``*/*`` or no header: Knative's senders)."""
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        if media.strip().lower() == "application/json" and "q=0" not in params.replace(" ", "").split(";"):
            return True
    return False


def _header_text(value: object, limit: int = 200) -> str:
    text = " ".join(str(value or "").split())  # no CR/LF: one header line
    return text.encode("ascii", "replace").decode("ascii")[:limit]


def _keep_dead_letter(trigger: RetrainTrigger, event: dict) -> None:
    """Keep a dead-lettered event on the object store (checksummed), count and log it."""
    from kfloop.store.objects import seal_json
    from kfloop.timestamps import day, key_stamp

    doc = dict(event)
    if isinstance(doc.get("data"), bytes):
        doc["data_base64"] = base64.b64encode(doc.pop("data")).decode("ascii")
    trigger.store.put(dead_letter_key(day(), key_stamp(), event["id"]), seal_json(doc))
    kind = event.get("type") if event.get("type") in SIGNAL_TYPES else "other"
    trigger.events[(kind, "dead_letter")] += 1
    log.error(
        "dead letter %s (%s from %s): delivery to %s failed with HTTP %s",
        event["id"],
        event.get("type"),
        event.get("source"),
        event.get("knativeerrordest", "?"),
        event.get("knativeerrorcode", "?"),
    )


def _json_object(body: bytes) -> dict:
    doc = parse_json(body, "request body")
    if not isinstance(doc, dict):
        raise InvalidRequest(f"expected a JSON object with 'model' and 'labels', got {type(doc).__name__}")
    return doc


def _error(error: KfloopError, trigger: RetrainTrigger | None, event_type: str | None, statuses=STATUS) -> JSONResponse:
    """The error as JSON with its HTTP status; counted as a rejected (4xx) or failed (5xx) event."""
    status = next(code for kind, code in statuses if isinstance(error, kind))
    if trigger is not None:
        kind = event_type if event_type in SIGNAL_TYPES else "other"  # bounded metric labels
        trigger.events[(kind, "rejected" if status < 500 else "error")] += 1
    (log.warning if status < 500 else log.error)("request failed (%d): %s", status, error)
    headers = {"www-authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    return JSONResponse({"error": str(error)}, status_code=status, headers=headers)


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The service's flags; their defaults come from ``settings`` (the environment's by default)."""
    settings = settings or Settings.from_env()
    p = argparse.ArgumentParser(prog="kfloop.serving.trigger.service", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--target",
        choices=("local", "kfp"),
        help="where runs go (default: kfp when --kfp_host / KFLOOP_KFP_HOST is set, else local)",
    )
    p.add_argument("--kfp_host", default=settings.kfp_host, help="KFP API URL (env KFLOOP_KFP_HOST)")
    p.add_argument("--kfp_namespace", help="Kubeflow profile namespace (multi-user installs)")
    p.add_argument("--experiment", default="kfloop", help="KFP experiment of the runs (default kfloop)")
    p.add_argument("--consecutive_windows", type=int, default=2, help="drifted windows in a row that start a run")
    p.add_argument(
        "--policy_file",
        default=settings.policy_file,
        help="per-signal rules, JSON or YAML: {signals: {SIGNAL: {action: alert|retrain, consecutive_windows: N, "
        "threshold: X}}} (env KFLOOP_POLICY_FILE; default: feature_drift retrains after --consecutive_windows, "
        "quality at once, every other signal alerts only)",
    )
    p.add_argument(
        "--signal_rule",
        nargs="*",
        action="extend",
        default=[],
        metavar="SIGNAL=ACTION[,windows=N][,threshold=X]",
        help="one signal's rule (over the policy file's), e.g. estimated_quality=retrain,windows=3,threshold=0.7",
    )
    p.add_argument("--cooldown_seconds", type=float, default=600, help="no run starts this soon after the last ended")
    p.add_argument("--strategy", choices=DATA_STRATEGIES, default="combined", help="retraining data (default combined)")
    p.add_argument("--window_days", type=int, default=7, help="days of labeled traffic for --strategy window")
    p.add_argument(
        "--tuning",
        choices=TUNING_CHOICES,
        default="reuse",
        help="for a version whose parameters were tuned: reuse them (default) or retune with the same search",
    )
    p.add_argument("--original_source", help="original training data (default: the production version's data_uri)")
    p.add_argument(
        "--new_models",
        nargs="*",
        action="extend",
        default=[],
        metavar="NAME",
        help="models the trigger may train before their first version is registered (on --original_source); "
        "events naming any other model without a registered version are refused (HTTP 422) and store nothing",
    )
    p.add_argument(
        "--pipeline_params",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameters for every run",
    )
    p.add_argument("--sink_url", default=settings.sink_url, help="where emitted events go (env K_SINK)")
    p.add_argument("--event_source", default="kfloop/trigger", help="CloudEvents source of emitted events")
    p.add_argument(
        "--sink_auth",
        action="store_true",
        help="send the control token (Authorization: Bearer) with emitted events: for a sink that wants it, "
        "as kfloop serve's gateway does; never for a broker",
    )
    p.add_argument(
        "--runner_cmd",
        default=settings.trigger_runner_cmd,
        help="local run command, given --param KEY=VALUE flags (env KFLOOP_TRIGGER_RUNNER_CMD; "
        "default: kfloop pipeline run --json)",
    )
    p.add_argument("--poll_seconds", type=float, default=5.0, help="seconds between run state checks")
    p.add_argument("--launch_attempts", type=int, default=5, help="tries to start (or read) a run before failing it")
    p.add_argument("--retry_seconds", type=float, default=2.0, help="first retry delay, doubled per attempt")
    p.add_argument("--quality_metric", help="metric the quality check watches (default: accuracy or rmse)")
    p.add_argument("--quality_threshold", type=float, help="default: --quality_margin off the version's test metric")
    p.add_argument("--quality_margin", type=float, default=0.1, help="fraction off the test metric (default 0.1)")
    p.add_argument("--quality_window", type=int, default=200, help="labeled rows per quality window")
    p.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="larger requests get HTTP 413")
    p.add_argument(
        "--oidc_issuer",
        default=settings.oidc_issuer,
        help="verify the Knative broker's OIDC token on the CloudEvents routes (/ and /v1/dead-letters): "
        "tokens of this issuer only (env KFLOOP_OIDC_ISSUER; the cluster's service account issuer); needs "
        "the cryptography package and --oidc_audience",
    )
    p.add_argument(
        "--oidc_audience",
        default=settings.oidc_audience,
        help="the audience the tokens must be for: the Triggers' spec.subscriber.audience (env KFLOOP_OIDC_AUDIENCE)",
    )
    p.add_argument(
        "--oidc_subjects",
        default=settings.oidc_subjects,
        help="comma-separated token subjects accepted, system:serviceaccount:NS:NAME: the Triggers' "
        "status.auth.serviceAccountName (env KFLOOP_OIDC_SUBJECTS; default any subject)",
    )
    p.add_argument(
        "--oidc_jwks_url",
        default=settings.oidc_jwks_url,
        help="the issuer's keys (env KFLOOP_OIDC_JWKS_URL; default the discovery document's jwks_uri; in a pod "
        "https://kubernetes.default.svc/openid/v1/jwks)",
    )
    p.add_argument(
        "--oidc_jwks_ca_file",
        default=settings.oidc_jwks_ca_file,
        help="CA bundle for the JWKS URL (env KFLOOP_OIDC_JWKS_CA_FILE)",
    )
    p.add_argument(
        "--oidc_jwks_token_file",
        default=settings.oidc_jwks_token_file,
        help="bearer token sent to the JWKS URL, e.g. the pod's own service account token "
        "(env KFLOOP_OIDC_JWKS_TOKEN_FILE)",
    )
    p.add_argument("--log_level", default=settings.log_level, help="(env KFLOOP_LOG_LEVEL, default INFO)")
    add_rollout_flags(p, settings)
    return p


def make_trigger(args: argparse.Namespace, settings: Settings) -> RetrainTrigger:
    from kfloop.pipelines.parameters import parameter_types, parse_params

    yaml_path = Path(pipelines.__file__).with_name("training.yaml")  # training.YAML_PATH, without importing kfp

    target = args.target or ("kfp" if args.kfp_host else "local")
    if target == "kfp" and not args.kfp_host:
        raise ConfigError("--target kfp needs --kfp_host or KFLOOP_KFP_HOST")
    policy = RetrainPolicy(
        args.consecutive_windows,
        args.cooldown_seconds,
        args.strategy,
        args.window_days,
        parse_params(args.pipeline_params, parameter_types(yaml_path)),
        tuning=args.tuning,
        rules={
            **(load_rules(args.policy_file) if args.policy_file else {}),
            **dict(parse_rule_flag(text) for text in args.signal_rule),
        },
    )
    if target == "kfp":
        runner = KfpRunner(
            args.kfp_host,
            args.kfp_namespace,
            args.experiment,
            yaml_path=yaml_path,
            token_path=settings.kfp_token_path,
        )
    else:
        runner = LocalRunner(settings, shlex.split(args.runner_cmd) if args.runner_cmd else DEFAULT_LOCAL_COMMAND)
    quality = QualityOptions(args.quality_metric, args.quality_threshold, args.quality_margin, args.quality_window)
    trigger = RetrainTrigger(
        settings,
        policy,
        runner,
        Outbox.for_settings(
            settings,
            "trigger",
            args.sink_url,
            headers=TokenFile(settings.control_token_path).headers if args.sink_auth else None,
        ),
        original_source=args.original_source,
        source=args.event_source,
        quality=quality,
        launch_attempts=args.launch_attempts,
        retry_seconds=args.retry_seconds,
        poll_seconds=args.poll_seconds,
        new_models=tuple(args.new_models),
    )
    trigger.auto_rollout = make_auto_rollout(args, trigger.store, trigger.outbox, settings.control_token_path)
    return trigger


def make_oidc(args: argparse.Namespace) -> OidcVerifier | None:
    """The OIDC verifier the flags ask for (None without --oidc_issuer / --oidc_audience); ``ConfigError``
    when one is missing, cryptography is not installed or the issuer's keys cannot be read."""
    if not (args.oidc_issuer or args.oidc_audience):
        return None
    verifier = OidcVerifier(
        args.oidc_issuer or "",
        args.oidc_audience or "",
        jwks_url=args.oidc_jwks_url,
        subjects=(args.oidc_subjects or "").split(","),
        fetch=http_fetcher(args.oidc_jwks_ca_file, args.oidc_jwks_token_file),
    )
    try:
        verifier.refresh()
    except Exception as e:  # noqa: BLE001 - name the cause, start nothing
        raise ConfigError(f"cannot read the OIDC issuer's keys: {e.__class__.__name__}: {e}") from None
    return verifier


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings.from_env()
    except KfloopError as e:
        raise SystemExit(f"error: {e}") from None
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        oidc = make_oidc(args)
        trigger = make_trigger(args, settings)
        token = ensure_token(settings.control_token_path)
    except KfloopError as e:
        raise SystemExit(f"error: {e}") from None
    log.info(
        "trigger on %s:%d: target %s, policy %s, sink %s; feedback and status want the token in %s",
        args.host,
        args.port,
        trigger.runner.target,
        trigger.policy.to_dict(),
        args.sink_url or "none (events stay in the outbox)",
        settings.control_token_path,
    )
    if oidc is not None:
        log.info("the CloudEvents routes want %s", oidc.describe())
    app = build_app(trigger, min(args.poll_seconds, args.retry_seconds), token, args.max_body_bytes, oidc)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=10,
        http=CoalescingHttpToolsProtocol,  # a JSON 400 for bytes that are not HTTP, one write per answer
    )
    _Server(config).run()


class _Server(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGTERM/SIGINT and then exiting with status 0
    (uvicorn itself re-raises the signal after its shutdown, ending the process with -15)."""

    @contextmanager
    def capture_signals(self):
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


if __name__ == "__main__":
    main()

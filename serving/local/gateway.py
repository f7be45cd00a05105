"""The local gateway: KServe's inference URLs on 127.0.0.1, split between a stable and a canary revision.

It does on one machine what the Knative ingress does for a KServe InferenceService with
``canaryTrafficPercent``: each request to a served model goes to the canary with probability
``canary_percent`` (weighted random per request, seedable) and to the stable revision otherwise.
Bodies are forwarded unchanged and the revision's status and body returned, with the headers
``x-kfloop-revision: stable|canary`` and ``x-kfloop-model-version: N``; the request forwarded to a
revision carries ``x-kfloop-revision: stable|canary|shadow`` (its role now, so a promoted canary's
transformer captures as ``stable``; a client's own header of that name is dropped).

Inference routes (anything under ``/v1/models/NAME`` or ``/v2/models/NAME`` is forwarded):
``POST /v1/models/NAME:predict``, ``POST /v2/models/NAME/infer``, ``GET /v2/models/NAME``,
``GET /v2/models/NAME/ready``, ``GET /v1/models/NAME``; the version routes
``/v2/models/NAME/versions/V/...`` go to the revision serving version V (the stable or the canary;
any other version is a 404), whatever the canary split. ``GET /v2`` is the server metadata.
Pinned routes, like KServe's tags: the path prefix ``/latest`` (the newest revision: the canary if
any) or ``/prev`` (the stable one),
e.g. ``/latest/v1/models/churn:predict``; or KServe's host style, a ``Host`` header whose first
label starts with ``latest-`` or ``prev-`` (``latest-churn.example.com``). Health: ``GET /``,
``/v2/health/live``, ``/v2/health/ready`` (503 until every model has a ready revision), and
``GET /v1/models`` (the served names). An unknown model is a 404 JSON error, no ready revision 503.
Every error the gateway answers itself is ``{"error": "..."}`` JSON (a method a path does not take
too: 405 with ``Allow``; ``kfloop.serving.json_errors``).

A request that fails on a pooled connection without an answer (the revision closed or reset it: a
stale keep-alive connection, or one reset after a malformed request) is sent once more to the same
revision on a fresh connection (inference is idempotent: the same body gives the same answer) before
the revision counts as failed. If a revision fails (connection refused or reset, no answer, HTTP
502/503/504) the request is retried once on the other revision. Only a refused connection (nothing
listens: the process is gone) marks the
revision unhealthy until the controller's watcher finds it ready again; an answer to one request, however
bad, never does (the watcher sees processes that exit). A request whose ``x-request-id`` is over
``kfloop.names.MAX_REQUEST_ID_BYTES`` (or not printable ASCII) is a 400 here and reaches no revision.
Client connections are bounded (``kfloop.serving.local.http_limits``): request headers must arrive
within ``header_seconds`` (10 s) and the body within ``body_seconds`` (30 s, else 408), a body over
``max_body_bytes`` (16 MiB) is a 413 before it is read past the limit, at most ``max_clients`` (1,000)
connections are open at once (503 beyond), and each refused or abandoned request is one log line.
Shadow mode mirrors a share of the POST requests to a third revision in the background
(``kfloop.serving.local.shadow``).

Admin API (JSON) under ``/kfloop/v1``, the control plane: every request wants ``Authorization: Bearer
<control token>`` (``kfloop.auth``; 401 without), no foreign ``Origin`` (403) and JSON bodies (415
otherwise): ``kfloop.serving.control_plane``. The ``x-kfloop-revision`` header sent to a revision is
signed with the token (``x-kfloop-revision-signature``), so its transformer trusts it from the gateway
only. Routes: ``GET models``, ``GET models/NAME`` (status),
``POST models/NAME/deploy {"version", "canary_percent"}``, ``POST models/NAME/promote``,
``POST models/NAME/rollback``, ``POST models/NAME/shadow {"version", "percent"}`` (deploying the
canary's version again with another ``canary_percent`` changes its share without restarting it;
a model's status carries per-revision request counters, ``windows``, for canary analysis:
``kfloop.serving.local.revision_window``). Events:
``POST /kfloop/v1/events`` (a CloudEvent, recorded in the event log; ``kfloop.serving.local.events_sink``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import re
import socket
import time
from collections.abc import Mapping
from typing import NamedTuple

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kfloop import __version__
from kfloop.auth import sign
from kfloop.errors import ConfigError, InvalidRequest, KfloopError, ModelNotFound, RegistryError
from kfloop.names import ADMIN_EVENTS_PATH as EVENTS_PATH
from kfloop.names import (
    ADMIN_MODELS_PATH,
    ADMIN_PATH,
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    REVISION_HEADER,
    REVISION_SIGNATURE_HEADER,
    validate_model_name,
    validate_request_id,
)
from kfloop.serving.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from kfloop.serving.control_plane import ControlPlaneGuard
from kfloop.serving.json_errors import EXCEPTION_HANDLERS
from kfloop.serving.local.controller import LocalController
from kfloop.serving.local.events_sink import EventSink
from kfloop.serving.local.http_limits import (
    DEFAULT_BODY_SECONDS,
    DEFAULT_HEADER_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    BodyDeadline,
    header_deadline_protocol,
)
from kfloop.serving.local.revision_window import RevisionWindows
from kfloop.serving.local.revisions import Revision
from kfloop.serving.local.routing import RouteState, pick
from kfloop.serving.local.shadow import ShadowRecorder

log = logging.getLogger(__name__)

MODEL_PATH = re.compile(r"^/v[12]/models/([^/:]+)")
VERSIONED_PATH = re.compile(r"^/v2/models/[^/:]+/versions/([^/]+)")
SERVER_METADATA = {"name": "kfloop", "version": __version__, "extensions": []}
PIN_PREFIXES = (("/latest/", "latest"), ("/prev/", "prev"))
RETRY_STATUSES = frozenset({502, 503, 504})
REQUEST_HOP_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-connection",
        "trailer",
        "accept-encoding",
        REVISION_HEADER,
        REVISION_SIGNATURE_HEADER,
    }
)
RESPONSE_DROP_HEADERS = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)


class Gateway:
    """The ASGI app (``app``) routing requests to the controller's revisions; owns the controller's lifetime."""

    def __init__(
        self,
        controller: LocalController,
        *,
        token: str,
        seed: int | None = None,
        timeout: float = 60.0,
        max_connections: int = 256,
        shadow_in_flight: int = 64,
        events: EventSink | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        header_seconds: float = DEFAULT_HEADER_SECONDS,
        body_seconds: float = DEFAULT_BODY_SECONDS,
        max_clients: int = DEFAULT_MAX_CONNECTIONS,
    ):
        self.controller, self.rng = controller, random.Random(seed)
        self.events = events or EventSink(controller.registry.store)
        self.timeout, self.max_connections = timeout, max_connections
        self.shadow = ShadowRecorder(controller.root, shadow_in_flight)
        self.windows = RevisionWindows()  # per-revision counts and latencies, for canary analysis
        self.client: aiohttp.ClientSession | None = None
        self.fresh: aiohttp.ClientSession | None = None  # one new connection per request: the retry
        self.header_seconds, self.max_clients = header_seconds, max_clients
        self.token = token
        self.signatures = {role: sign(token, role) for role in ("stable", "canary", "shadow")}
        admin = ADMIN_MODELS_PATH
        self.routes = Starlette(
            lifespan=self._lifespan,
            exception_handlers={**EXCEPTION_HANDLERS, ClientDisconnect: _disconnected},
            routes=[
                Route("/", self.alive),
                Route("/v2/health/live", self.alive),
                Route("/v2/health/ready", self.ready),
                Route("/v2", self.server_metadata),
                Route("/v2/", self.server_metadata),
                Route("/v1/models", self.models),
                Route(admin, self.admin_list),
                Route(admin + "/{name}", self.admin_status),
                Route(admin + "/{name}/{action}", self.admin_action, methods=["POST"]),
                Route(EVENTS_PATH, self.events.receive, methods=["POST"]),
                Route("/{path:path}", self.proxy, methods=["GET", "POST"]),
            ],
        )
        guarded = ControlPlaneGuard(self.routes, token, is_admin_path)
        self.app = BodyDeadline(BodySizeLimit(guarded, max_body_bytes), body_seconds)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=5.0),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )
        self.fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=5.0),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )
        self.controller.start_watching()
        try:
            yield
        finally:
            await self.shadow.aclose()
            await self.client.close()
            await self.fresh.close()
            await self.controller.aclose()

    # -- inference -----------------------------------------------------------------------------

    async def proxy(self, request: Request) -> Response:
        pin, path = split_pin(request.url.path, request.headers.get("host", ""))
        match = MODEL_PATH.match(path)
        if match is None:
            return _json(
                404,
                {
                    "error": f"no route for {request.url.path}; model URLs look like "
                    f"/v1/models/NAME:predict or /v2/models/NAME/infer"
                },
            )
        name = match.group(1)
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id is not None:
            try:
                validate_request_id(request_id, REQUEST_ID_HEADER)
            except InvalidRequest as e:
                return _json(400, {"error": str(e)})
        state = self.controller.route(name)
        if state is None:
            served = ", ".join(sorted(self.controller.routes)) or "none"
            return _json(404, {"error": f"model {name!r} is not served here (served: {served})"})
        versioned = VERSIONED_PATH.match(path)
        if versioned is not None:  # /v2/models/NAME/versions/V/...: the revision that serves V
            version = versioned.group(1)
            served = sorted(v for v in (state.stable, state.canary) if v is not None)
            if not version.isdigit() or int(version) not in served:
                return _json(
                    404, {"error": f"model {name!r} version {version!r} is not served here (served: {served})"}
                )
            chosen = [int(version)]
        else:
            chosen = pick(state, self.rng, pin)
        revisions = [self.controller.revision(name, version) for version in chosen]
        ready = [rev for rev in revisions if rev is not None and rev.healthy]
        if not ready:
            what = f"the {pin} revision" if pin else "a revision"
            return _json(503, {"error": f"{name} has no ready {what} ({state.describe()})"})
        body = await request.body()  # a client gone mid-body: _disconnected
        headers = [(k, v) for k, v in request.headers.items() if k not in REQUEST_HOP_HEADERS]
        target = path + ("?" + request.url.query if request.url.query else "")
        for rev in ready[:2]:
            started = time.perf_counter()
            try:
                response = await self._send(request.method, rev.url + target, self._signed(headers, state, rev), body)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                self.windows.observe(name, rev.version, started, True)
                self._failed(rev, e)
                continue
            self.windows.observe(name, rev.version, started, response.status >= 500)
            if response.status in RETRY_STATUSES and rev is not ready[-1]:
                rev.failures += 1  # retried on the other revision; one answer never marks a revision unhealthy
                continue
            rev.requests += 1
            role = state.role(rev.version)
            if request.method == "POST" and state.shadow is not None:
                self._mirror(state, target, headers, body, role, rev, response)
            return response.to_starlette(role, rev.version)
        return _json(503, {"error": f"{name}: no revision answered ({ready[-1].reason})"})

    async def _send(self, method: str, url: str, headers: list, body: bytes) -> Answer:
        """The revision's answer; a pooled connection that fails without an answer (closed or reset by
        the revision) is followed by one more try on a fresh connection before the error counts."""
        try:
            return await self._request(self.client, method, url, headers, body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if isinstance(e, aiohttp.ClientConnectorError):  # refused: nothing listens, no retry helps
                raise
            log.info(
                "%s %s failed on a pooled connection (%s); once more on a fresh one", method, url, type(e).__name__
            )
            return await self._request(self.fresh, method, url, headers, body)

    @staticmethod
    async def _request(client: aiohttp.ClientSession, method: str, url: str, headers: list, body: bytes) -> Answer:
        async with client.request(method, url, data=body, headers=headers) as response:
            return Answer(response.status, response.headers, await response.read())

    def _signed(self, headers: list, state: RouteState, rev: Revision, role: str | None = None) -> list:
        """``headers`` with the revision's role and its signature (a transformer trusts only a signed role)."""
        role = role or state.role(rev.version)
        return [*headers, (REVISION_HEADER, role), (REVISION_SIGNATURE_HEADER, self.signatures[role])]

    def _failed(self, rev: Revision, error: BaseException) -> None:
        """A request to ``rev`` failed without an answer: counted; only a refused connection (nothing
        listens on the port) takes it out of the routing, since a client can make any other failure
        happen (an answer the client refuses, a reset on a malformed request)."""
        rev.failures += 1
        if isinstance(error, aiohttp.ClientConnectorError):
            self.controller.mark_unhealthy(rev, f"{type(error).__name__}: {error}")
        else:
            log.warning("%s v%d: request failed (%s: %s)", rev.model, rev.version, type(error).__name__, error)

    def _mirror(
        self, state: RouteState, target: str, headers: list, body: bytes, role: str, rev: Revision, response: Answer
    ) -> None:
        if self.rng.random() * 100 >= state.shadow_percent:
            return
        shadow = self.controller.revision(state.model, state.shadow)
        if shadow is not None and shadow.healthy:
            primary = {"revision": role, "version": rev.version, "status": response.status}
            sent = self._signed(headers, state, shadow, role="shadow")
            self.shadow.mirror(self.client, shadow, target, sent, body, primary, response.content)

    async def alive(self, request: Request) -> Response:
        return _json(200, {"status": "alive", "live": True})

    async def server_metadata(self, request: Request) -> Response:
        """The Open Inference Protocol's server metadata (``GET /v2``)."""
        return _json(200, SERVER_METADATA)

    async def models(self, request: Request) -> Response:
        return _json(200, {"models": sorted(self.controller.routes)})

    async def ready(self, request: Request) -> Response:
        states = {name: self.controller.status(name)["ready"] for name in self.controller.routes}
        ok = bool(states) and all(states.values())
        return _json(200 if ok else 503, {"ready": ok, "models": states})

    # -- admin ---------------------------------------------------------------------------------

    async def admin_list(self, request: Request) -> Response:
        return _json(200, {"models": [self.status(name) for name in sorted(self.controller.routes)]})

    async def admin_status(self, request: Request) -> Response:
        return await _admin(lambda: self.status(_model_name(request.path_params["name"])))

    async def admin_action(self, request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]

        async def run():
            _model_name(name)  # it becomes a folder under KFLOOP_HOME/serving
            body = await _body(request)
            if action == "deploy":
                await self.controller.deploy(name, _version(body), body.get("canary_percent"))
            elif action == "promote":
                await self.controller.promote(name)
            elif action == "rollback":
                await self.controller.rollback(name)
            elif action == "shadow":
                version = None if body.get("version") is None else _version(body)
                await self.controller.shadow(name, version, body.get("percent", 100 if version else 0))
            else:
                raise InvalidRequest(f"unknown action {action!r}; expected deploy, promote, rollback or shadow")
            return self.status(name)

        return await _admin(run)

    def status(self, name: str) -> dict:
        doc = self.controller.status(name)
        if doc["shadow"]:
            doc["shadow"].update(self.shadow.stats(name, doc["shadow"]["version"]))
        doc["windows"] = self.windows.of_model(name)
        return doc

    # -- running -------------------------------------------------------------------------------

    def server(self, port: int, host: str = "127.0.0.1", log_level: str = "warning") -> uvicorn.Server:
        """A uvicorn server for ``app``; ``serve(sockets=[bind(port)])`` or ``run()`` it."""
        return uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=host,
                port=port,
                log_level=log_level,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=5,
                http=header_deadline_protocol(self.header_seconds),
                limit_concurrency=self.max_clients,
            )
        )


def bind(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on ``host:port``; ``ConfigError`` when the port is taken."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror}); is another kfloop serve running? "
            f"pick another port with --port"
        ) from e
    sock.listen(2048)
    return sock


def is_admin_path(path: str) -> bool:
    """The control plane: the admin API and the event sink, everything under ``/kfloop/v1``."""
    return path == ADMIN_PATH or path.startswith(ADMIN_PATH + "/")


def _model_name(name: str) -> str:
    try:
        return validate_model_name(name)
    except RegistryError as e:
        raise InvalidRequest(str(e)) from None


def split_pin(path: str, host: str) -> tuple[str | None, str]:
    """The pinned revision (``latest``/``prev``/None) and the path without the pin prefix."""
    for prefix, pin in PIN_PREFIXES:
        if path.startswith(prefix):
            return pin, path[len(prefix) - 1 :]
    label = host.split(".", 1)[0]
    for pin in ("latest", "prev"):
        if label.startswith(pin + "-"):
            return pin, path
    return None, path


class Answer(NamedTuple):
    """A revision's answer, read in full."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def to_starlette(self, role: str, version: int) -> Response:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in RESPONSE_DROP_HEADERS}
        headers[REVISION_HEADER], headers[MODEL_VERSION_HEADER] = role, str(version)
        return Response(self.content, self.status, headers=headers)


async def _disconnected(request: Request, error: ClientDisconnect) -> Response:
    """A client gone before its body was read (or too slow: ``BodyDeadline`` answers 408): one line."""
    log.warning("%s %s: the client disconnected before its body was read", request.method, request.url.path)
    return _json(400, {"error": "the client disconnected before its body was read"})


def _json(status: int, doc: dict) -> Response:
    return Response(orjson.dumps(doc), status, media_type="application/json")


async def _admin(run) -> Response:
    """Run an admin call (a function, sync or async); a ``KfloopError`` becomes a JSON error."""
    try:
        result = run()
        return _json(200, await result if inspect.isawaitable(result) else result)
    except KfloopError as e:
        return _json(_status_of(e), {"error": str(e)})


def _status_of(error: KfloopError) -> int:
    if isinstance(error, ModelNotFound):
        return 404
    if isinstance(error, (InvalidRequest, ConfigError)):
        return 400
    if isinstance(error, RegistryError):
        return 409
    return 500


async def _body(request: Request) -> dict:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"request body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object; got {type(body).__name__}")
    return body


def _version(body: dict) -> int:
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidRequest(f'"version" must be a registered version number (1, 2, ...); got {version!r}')
    return version

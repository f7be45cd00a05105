"""What the entry points of kfloop's KServe servers (the predictor and the drift transformer) share:
the entry point itself (flags, logging, a ``KfloopError`` as one line), the model bundle to serve
and its version, the event loop, the ``kserve.ModelServer`` built from the common flags (and the address
it listens on: ``--http_host``), request ids, and on KServe's request path the answer to a body not sent
as JSON and the V2 inputs as ``Tensor``s.

Nothing here imports XGBoost, so the transformer can use it without the predictor's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kserve
import kserve.logging
import kserve.model_server
import kserve.protocol.rest.server
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from starlette.exceptions import HTTPException as StarletteHTTPException

from kfloop.config import Settings
from kfloop.errors import ConfigError, InvalidRequest, KfloopError
from kfloop.inference.responses import requested_binary
from kfloop.inference.tensors import Tensor
from kfloop.names import REQUEST_ID_HEADER, validate_request_id
from kfloop.serving.http_protocol import CoalescingHttpToolsProtocol
from kfloop.serving.model_servers.registered import fetch_registered

logger = logging.getLogger(__name__)

ALL_ADDRESSES = ("0.0.0.0", "::", "")
_REGISTRY_REFERENCE = re.compile(r"^[a-z0-9][-a-z0-9]*(:(\d+|latest)|@[a-z-]+)$")


def run_entry_point(
    parser: argparse.ArgumentParser, serve: Callable[[argparse.Namespace], None], argv: list[str] | None = None
) -> None:
    """Parse the flags, configure logging and ``serve``; a ``KfloopError`` (a bad flag, a missing or
    tampered bundle) ends the process with ``error: <message>``, no traceback."""
    args = parser.parse_args(argv)
    configure_logging(args)
    try:
        serve(args)
    except KfloopError as e:
        raise SystemExit(f"error: {e}") from e


def resolve_model_dir(arg: str, settings: Settings | None = None) -> Path:
    """The local bundle folder for ``--model_dir``: a folder, a ``file://`` URL, or a registry
    reference (``NAME:VERSION``, ``NAME:latest``, ``NAME@production``) fetched from the registry."""
    return resolve_model(arg, settings)[0]


def resolve_model(arg: str, settings: Settings | None = None) -> tuple[Path, str | None]:
    """The bundle folder and, for a registry reference, the registered version number (a bundle
    carries no version of its own: a plain folder's version comes from ``--model_version``)."""
    if _REGISTRY_REFERENCE.match(arg) and not Path(arg).exists():
        return fetch_registered(arg, settings or Settings.from_env())
    path = Path(urllib.parse.unquote(urllib.parse.urlparse(arg).path)) if arg.startswith("file://") else Path(arg)
    if not path.is_dir():
        raise ConfigError(
            f"model dir {arg!r} is not a folder; expected a model bundle folder, a file:// URL "
            f"or a registry reference NAME:VERSION / NAME@stage"
        )
    return path, None


def configure_logging(args: argparse.Namespace) -> None:
    """KServe's logging (``--configure_logging``), kfloop's loggers at INFO on KServe's handlers, and
    the per-request log lines off unless ``--request_logging``."""
    if args.configure_logging:
        kserve.logging.configure_logging(args.log_config_file)
    kfloop_logger = logging.getLogger("kfloop")
    kfloop_logger.setLevel(logging.INFO)
    if not kfloop_logger.handlers:
        kfloop_logger.handlers = list(kserve.logging.logger.handlers)
        kfloop_logger.propagate = False
    if not args.request_logging:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # uvicorn formats its access line's arguments whenever the logger has a handler (anywhere up
        # the tree), whatever its level: none at all, so that it skips them (~3% of a request's CPU)
        logging.getLogger("uvicorn.access").propagate = False
        logging.getLogger("uvicorn.access").handlers = []


def install_event_loop(choice: str) -> None:
    """Honor ``--event-loop``: kserve 0.20 runs uvicorn inside its own ``asyncio.run``, so uvicorn's
    loop choice never applies. uvloop (``auto`` when installed) takes ~10% less CPU per request."""
    if choice == "asyncio":
        return
    try:
        import uvloop
    except ImportError as e:
        if choice == "uvloop":
            raise ConfigError("--event-loop uvloop: uvloop is not installed") from e
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())  # ModelServer.setup_event_loop needs a current loop


def add_listen_flags(parser: argparse.ArgumentParser) -> None:
    """``--http_host`` (KServe 0.20 has no flag for the address its REST server listens on), and gRPC
    off by default: kfloop's InferenceService routes HTTP only (a Knative revision exposes one port,
    and the transformer, the gateway and canary analysis speak HTTP), so a gRPC server in every pod
    would listen, on every address, for requests nothing can route to it."""
    parser.add_argument(
        "--http_host",
        default="0.0.0.0",
        help="Address the HTTP server listens on (default 0.0.0.0, as KServe's, for a pod; kfloop serve "
        "passes 127.0.0.1). KServe's gRPC server always listens on every address: with another "
        "address, pass --enable_grpc false",
    )
    parser.set_defaults(enable_grpc=False)


class VersionedDataPlane(DataPlane):
    """KServe's data plane, with the model's ``versions`` in the V2 model metadata (the one version the
    server serves, on ``/v2/models/NAME/versions/VERSION/...`` too: ``fast_path``)."""

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        version = getattr(self.get_model_from_registry(model_name), "version", None)
        if version:
            metadata["versions"] = [str(version)]
        return metadata


def check_requested_outputs(request: InferRequest) -> None:
    """HTTP 400 for a KServe ``InferRequest`` naming an output the model does not have (KServe's path
    would answer it without that output)."""
    body = {"outputs": [{"name": o.name, "parameters": o.parameters} for o in request.request_outputs or []]}
    try:
        requested_binary(body if request.request_outputs else {})
    except InvalidRequest as e:
        raise InvalidInput(str(e)) from None


async def _http_error(_, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in exc.errors()
    )
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)


def add_error_handlers(app) -> None:
    """KServe's error body ``{"error": message}`` on every status: FastAPI answers an unknown route
    (404), a wrong method (405) and a body its pydantic models refuse (422, answered 400 here as every
    other malformed request) with ``{"detail": ...}``."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


def listen_on(host: str | None) -> None:
    """Make KServe's REST server listen on ``host`` (None: KServe's ``0.0.0.0``) and write each answer's
    head and body in one system call (``http_protocol``): kserve 0.20's ``RESTServer`` hard-codes
    ``0.0.0.0`` and uvicorn's default protocol in its uvicorn config, and ``ModelServer.start`` builds
    it by its name in ``kserve.model_server``, so a subclass that sets both takes that name's place."""
    base = kserve.protocol.rest.server.RESTServer

    class KfloopRESTServer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if host is not None:
                self.config.host = host
            self.config.http = CoalescingHttpToolsProtocol

    kserve.model_server.RESTServer = KfloopRESTServer


def model_server(args: argparse.Namespace, **extra: Any) -> kserve.ModelServer:
    """A ``kserve.ModelServer`` configured by KServe's common flags (``extra``: more keyword arguments),
    listening on ``--http_host``; KServe's latency log lines only with ``--request_logging``."""
    host = getattr(args, "http_host", "0.0.0.0")
    if host not in ALL_ADDRESSES:
        if args.enable_grpc:
            raise ConfigError(
                f"--http_host {host}: KServe's gRPC server listens on every address ([::]); "
                f"pass --enable_grpc false to listen on {host} only"
            )
    listen_on(None if host in ALL_ADDRESSES else host)
    return kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        access_log_format=args.access_log_format,
        enable_latency_logging=args.enable_latency_logging and args.request_logging,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        **extra,
    )


def freeze_heap() -> None:
    """Move everything alive after start-up (imported modules, the loaded model) out of the garbage
    collector's reach: a full collection of that heap (KServe, FastAPI, pydantic, XGBoost, ...) stops
    the server for ~120 ms, often enough to set p99 at 16 concurrent requests; frozen, it takes ~3 ms.

    Then collections are made rarer (``GC_THRESHOLDS``): a request's objects die by reference counting,
    but those a request leaves for a while (the capture buffer's rows, queued drift rows) were scanned by
    a young collection every ~700 allocations and by the older ones after that: ~8% of the drift
    transformer's time at 100-row requests, in pauses of several ms (``benchmarks/serving.py``; 7x less
    with these thresholds)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


GC_THRESHOLDS = (10_000, 20, 20)  # Python's defaults: (700, 10, 10)


def request_tensors(request: InferRequest) -> list[Tensor]:
    """The inputs of a KServe ``InferRequest`` as ``Tensor``s: JSON data as parsed, raw (binary REST
    or gRPC) data through numpy."""
    tensors = []
    for i in request.inputs:
        raw = getattr(i, "_raw_data", None) is not None or i.data is None
        tensors.append(Tensor(i.name, i.shape, i.datatype, i.as_numpy() if raw else i.data))
    return tensors


def request_id_of(headers: dict[str, str] | None, body_id: Any = None) -> str | None:
    """The client's request id (``x-request-id`` or ``ce-id`` header, else the V2 body ``id``), checked
    against ``kfloop.names.validate_request_id`` (a 400 naming it when too long or not printable ASCII);
    None when the client sent none."""
    headers = headers or {}
    if body_id is not None and body_id != "":
        if not isinstance(body_id, str):
            raise InvalidInput(f'"id" must be a string; got {type(body_id).__name__}')
        body_id = _checked(body_id, '"id"')
    for name in (REQUEST_ID_HEADER, "ce-id"):
        if headers.get(name):
            return _checked(headers[name], name)
    return body_id or None


def _checked(value: str, what: str) -> str:
    try:
        return validate_request_id(value, what)
    except InvalidRequest as e:
        raise InvalidInput(str(e)) from None


def require_json(payload: Any) -> None:
    """HTTP 400 for a body KServe left undecoded because it was not sent as JSON (``curl -d`` without
    a content-type header)."""
    if isinstance(payload, (bytes, str)):
        raise InvalidInput("request body was not sent as JSON: use the header content-type: application/json")

"""The drift transformer: a KServe transformer in front of the predictor that validates every request,
captures what was served, and watches the served inputs for drift.

For each request (KServe V1 or V2) the transformer:

1. decodes it with ``kfloop.inference.requests.RequestDecoder`` (the training schema's encoding); a
   malformed request is HTTP 400 naming the field and never reaches the predictor;
2. forwards it to the predictor (``--predictor_host``, ``--predictor_protocol``) over pooled
   keep-alive connections (``predictor_client``, ``http_pool``): the body as received (a V2 body
   without an id gets the request id); rebuilt from the decoded matrix only when the client's
   protocol is not the predictor's (``kfloop.inference.requests.request_in``); concurrent V1 requests
   that go together are combined into one predictor call (``forward_batching``,
   ``--predictor_coalesce_calls``). The predictor's answer
   goes back as received, or converted to the client's protocol (``responses.answer_in``). Its 4xx
   reach the client with their status and message (KServe's default would be 500; see
   ``predictor_client``);
3. hands the request's capture records (per row: request id, time, features by name, unseen
   categories, prediction, model version, revision) to a ``CaptureWriter`` as one columnar
   ``CaptureBatch`` (the request's own lists, no work per row; buffered, written in batches from a
   thread; a full or unreachable store drops and counts records, it never slows the request; in this
   process, without ``--capture_journal`` this and step 4 run once the answer is written, with it
   before); when a rollout set a shadow candidate (the mirror state of ``kfloop.rollout.mirror``), a share of the
   requests goes to it too, in the background, and its answers are recorded (``mirror.py``);
4. hands the decoded rows to a ``DriftMonitor`` (bounded queue, background thread, windows of
   ``--drift_window`` rows, at most ``--drift_cpu_share`` of a core: at high row rates the checked
   windows are a sample of the traffic); a drifted window becomes an ``io.kfloop.drift.detected`` CloudEvent
   in a durable outbox, delivered to ``--sink_url`` or ``K_SINK`` (Knative SinkBinding). Rows are
   checked per answering version (``kfloop.monitoring.versions``): a rollout changes the predictor,
   not the transformer, so each version the predictor names is checked against its own schema and
   drift reference (loaded from the registry off the request path when it first answers; until
   then its rows are counted in ``kfloop_drift_rows_unreferenced_total``, not checked), in its own
   windows, and its events name it; at most ``--drift_versions`` versions at once. When the version's
   bundle has baseline constraints (``drift/constraints.json``, ``kfloop.monitoring.constraints``),
   the same windows are checked for data quality (missing rates, out-of-range values, unseen
   categories, and the requests this transformer rejected with 400 since the last window) and
   prediction drift (the answers' distribution against training's), on the same thread:
   ``io.kfloop.data_quality.violated`` / ``io.kfloop.prediction_drift.detected`` events; a bundle
   without them still serves, without those signals.

Steps 3 and 4 (``observer.py``: the capture writer, the drift monitors, the outbox of their events) run
in a child process with its own GIL (``monitor_process.py``, ``--monitor_process``, default true): the
request path only appends the request and answer bytes it already has to a pipe, so neither a drift
window's checks nor a capture object's conversion nor the garbage they leave pauses a request; with
``--capture_journal`` (records journaled before the answer leaves) they run in this process.

The request id is the ``x-request-id`` or ``ce-id`` header, else the V2 request id, else a new one;
it is forwarded to the predictor and returned in the ``x-request-id`` response header, and row ``i``
is captured as ``<id>:<i>``; a V2 answer's ``id`` is the request's own ``id`` when it has one (behind
Istio every request carries an ``x-request-id``); an id over ``kfloop.names.MAX_REQUEST_ID_BYTES`` (256 bytes) or not
printable ASCII is a 400. Captures name the version the predictor's ``x-kfloop-model-version``
header names and the revision the gateway's ``x-kfloop-revision`` header names (a promoted canary
captures as ``stable``) when the gateway signed it with the control token (``kfloop.auth``), else
``--model_version`` and ``--revision``.

Protocol: the V2 model metadata is the predictor's (inputs, outputs, ``versions``); requested
outputs are checked (an unknown name is a 400) and binary output data is answered in the binary
extension; the transformer serves HTTP only (``--enable_grpc true`` is refused: kfloop's
InferenceService routes HTTP).

Plain JSON requests take the fast path (``serving/fast_path.py``: ``infer_json``, none of FastAPI's
middlewares, routing or pydantic: about half the transformer's CPU per one-row request); KServe's
own request path (``predict``) serves the rest (V2 binary bodies, binary CloudEvents) and every
request when ``--request_logging`` is on. Both do the same work.

Metrics: ``serving/transformer_metrics.py``. When the server stops, KServe unloads the model and
``stop`` checks the queued rows, flushes the captures, tries to deliver the pending events for
``--shutdown_seconds`` and stops the outbox (undelivered events stay on disk for the next start; with
S3 storage they move to the object store, where the next transformer of the same name and revision
adopts them: ``kfloop.events.outbox``).

Run: ``python -m kfloop.serving.model_servers.transformer --model_name churn --predictor_host churn-predictor``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kserve
import kserve.model_server
import orjson
from kserve.errors import InvalidInput
from kserve.predictor_config import PredictorConfig
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.utils.utils import strtobool

from kfloop.auth import read_token, signature_matches
from kfloop.config import Settings
from kfloop.errors import ConfigError, InvalidRequest
from kfloop.events.outbox import Outbox
from kfloop.inference.requests import (
    Decoded,
    RequestDecoder,
    request_in,
    v2_tensors,
)
from kfloop.inference.responses import answer_in, requested_binary
from kfloop.inference.tensors import Tensor, plain_values, v2_input_metadata, v2_output_metadata
from kfloop.monitoring.capture_format import FORMATS
from kfloop.monitoring.drift import BACKENDS
from kfloop.names import REQUEST_ID_HEADER, REVISION_HEADER, REVISION_SIGNATURE_HEADER
from kfloop.schema import FeatureSchema
from kfloop.serving.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from kfloop.serving.model_servers import transformer_metrics as metrics
from kfloop.serving.model_servers.fast_path import InferenceFastPath, Reply, binary_reply, wrap_application
from kfloop.serving.model_servers.forward_batching import DEFAULT_MAX_IN_FLIGHT, ForwardCoalescer
from kfloop.serving.model_servers.mirror import TrafficMirror
from kfloop.serving.model_servers.monitor_process import MonitorProcess, child_config
from kfloop.serving.model_servers.observer import MonitorOptions, Observer, open_capture_store, open_outbox
from kfloop.serving.model_servers.predictor_client import (
    PredictorAnswer,
    PredictorClient,
    PredictorError,
    PredictorRejected,
    add_error_handler,
    forwarded_headers,
)
from kfloop.serving.model_servers.registered import fetch_registered
from kfloop.serving.model_servers.startup import (
    VersionedDataPlane,
    add_error_handlers,
    add_listen_flags,
    check_requested_outputs,
    freeze_heap,
    install_event_loop,
    model_server,
    request_id_of,
    request_tensors,
    require_json,
    resolve_model,
    run_entry_point,
)
from kfloop.store.bundle import load_schema, verify_bundle
from kfloop.store.objects import ObjectStore

logger = logging.getLogger("kfloop.serving.model_servers.transformer")  # not "__main__" under python -m

DEFAULT_MODEL_DIR = "/mnt/models"


@dataclasses.dataclass(frozen=True)
class TransformerOptions(MonitorOptions):
    """What the transformer does (the flags of ``main``): forwarding, and monitoring (``MonitorOptions``)."""

    encoded_rows: bool = False  # forward rows as encoded lists in schema order (KServe's stock xgbserver)
    coalesce_calls: int = DEFAULT_MAX_IN_FLIGHT  # predictor calls in flight before requests combine; 0: off
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    monitor_process: bool = True  # capture and drift checks in a child process (monitor_process.py)


class DriftTransformer(kserve.Model):
    """Validates, forwards, captures and drift-checks the requests for model ``name``."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        store: ObjectStore,
        outbox: Outbox,
        client: PredictorClient,
        options: TransformerOptions = TransformerOptions(),
        model_version: str | None = None,
        token: str | None = None,
        references: Callable[[str], Path] | None = None,
        mirror: TrafficMirror | None = None,
        monitor_process: MonitorProcess | None = None,
    ):
        super().__init__(name, return_response_headers=True)
        self.mirror = mirror  # shadow traffic (serving/model_servers/mirror.py), None: off
        self.token = token  # the control token: an x-kfloop-revision header counts only when signed with it
        self.model_dir, self.store, self.outbox, self.client = Path(model_dir), store, outbox, client
        self.options, self.version = options, model_version
        self.coalescer = (  # concurrent V1 requests forwarded in one predictor call (forward_batching.py)
            ForwardCoalescer(client, options.max_batch_size, options.max_body_bytes, options.coalesce_calls)
            if options.coalesce_calls > 0 and not options.encoded_rows
            else None
        )
        self.references = references  # version -> its bundle folder (the registry's), for versions that answer
        # capture and drift checks: in a child process (monitor_process.py), else in this one (observer.py)
        self.monitor_process = monitor_process
        self.observer: Observer | None = None
        self.schema: FeatureSchema | None = None
        self.decoder: RequestDecoder | None = None
        self.rejected_requests = 0  # requests the decoder refused (400): the data-quality check counts them

    def load(self) -> bool:
        verify_bundle(self.model_dir)
        self.schema = load_schema(self.model_dir)
        self.version = self.version or "unknown"
        self.decoder = RequestDecoder(self.schema, self.options.max_batch_size)
        opts = self.options
        if self.monitor_process is not None:
            started = self.monitor_process.start()
            backend, capture_location = started["backend"], started["capture_location"]
        else:
            self.observer = Observer(
                self.name,
                self.model_dir,
                self.version,
                self.store,
                self.outbox,
                opts,
                self.references,
                self.schema,
                rejected=lambda: self.rejected_requests,
            )
            backend, capture_location = self.observer.backend, self.observer.capture_location
        if self.mirror is not None:
            self.mirror.start()
        self.ready = True
        logger.info(
            "transformer for %s version %s (%s): %d features, drift window %d rows (%s backend%s), "
            "predictor %s, captures to %s",
            self.name,
            self.version,
            opts.revision,
            len(self.schema.features),
            opts.drift_window,
            backend,
            ", in a monitor process" if self.monitor_process is not None else "",
            self.client.url,
            capture_location,
        )
        return self.ready

    def stop(self) -> None:
        """Check the queued rows, write the buffered captures, stop the outbox (KServe calls this on unload)."""
        timeout = self.options.shutdown_seconds
        if self.mirror is not None:
            self.mirror.stop(timeout)
        if self.monitor_process is not None:
            self.monitor_process.stop(timeout)
        if self.observer is not None:
            self.observer.stop(timeout)
        _close_soon(self.client)
        super().stop()

    async def infer_json(self, protocol: str, body: Any, raw: bytes, headers: dict[str, str]) -> Reply:
        """A plain JSON request (``serving/fast_path.py``): ``body`` as parsed, ``raw`` as received."""
        tensors = self._v2_tensors(body) if protocol == "v2" else None
        request_id = _request_id(headers, body.get("id") if tensors is not None else None)
        binary = _checked(requested_binary, body) if tensors is not None else False
        if protocol == "v2" == self.client.protocol and not body.get("id"):  # answered with this request id
            raw = orjson.dumps({**body, "id": request_id})
        answer, predictor = await self._serve(protocol, body, tensors, headers, request_id, raw)
        reply_headers = {REQUEST_ID_HEADER: request_id}
        if binary:  # a binary answer of the predictor came back decoded: its version is the header's
            version = answer.get("model_version") or predictor.version or self.version
            return binary_reply({**answer, "model_version": str(version)}, reply_headers)
        same = protocol == self.client.protocol and predictor.content is not None
        return Reply(predictor.content if same else orjson.dumps(answer), reply_headers)

    def get_input_types(self) -> list[dict]:
        return v2_input_metadata(self.schema)

    def get_output_types(self) -> list[dict]:
        return v2_output_metadata(self.schema)

    def validate(self, payload: Any) -> Any:
        """KServe's check before ``predict``; a body not sent as JSON is a 400 here (KServe's own check
        fails on it with a 500 when the predictor speaks V2), the rest is ``_decode``'s."""
        require_json(payload)
        return payload

    async def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict:
        """KServe's path, for what the fast path leaves to it (V2 binary bodies, binary CloudEvents,
        per-request logging on); the same work as ``infer_json``."""
        headers = headers or {}
        if isinstance(payload, InferRequest):
            check_requested_outputs(payload)
            request_id = _request_id(headers, payload.id)
            payload.id = payload.id or request_id
            body, json_length = payload.to_rest()
            answer, predictor = await self._serve(
                "v2", payload, request_tensors(payload), headers, request_id, body, json_length
            )
            if response_headers is not None:
                response_headers[REQUEST_ID_HEADER] = request_id
            version = answer.get("model_version") or predictor.version or self.version
            response = InferResponse.from_rest({**answer, "model_version": str(version)})
            # KServe encodes the outputs as the client asked (binary or JSON, per requested output)
            response._use_binary_outputs, response._requested_outputs = (
                payload.use_binary_outputs,
                payload.request_outputs,
            )
            return response
        else:
            request_id = _request_id(headers, None)
            answer, _ = await self._serve("v1", payload, None, headers, request_id, payload)
        if response_headers is not None:
            response_headers[REQUEST_ID_HEADER] = request_id
        return answer

    async def _serve(
        self,
        protocol: str,
        body: Any,
        tensors: list[Tensor] | None,
        headers: dict[str, str],
        request_id: str,
        forward: Any,
        json_length: int | None = None,
    ) -> tuple[dict, PredictorAnswer]:
        """Validate, forward, capture and queue for drift one request on ``protocol`` (V1: ``body``; V2:
        ``tensors``); ``forward`` is what the predictor gets when it speaks the same protocol (on the
        other one it gets a body rebuilt from the decoded matrix). Returns the answer in the client's
        protocol and the predictor's own answer."""
        decoded = self._decode(body, tensors, forward if isinstance(forward, bytes) else None)
        received = forward if isinstance(forward, bytes) and json_length is None else None  # the request's JSON
        sent = forwarded_headers(headers, request_id)
        if protocol != self.client.protocol or self.options.encoded_rows:
            forward, json_length = request_in(self.client.protocol, decoded, self.schema, request_id), None
        try:
            coalesce = self.coalescer is not None and protocol == "v1" == self.client.protocol
            if coalesce and _instances_only(body, forward):
                predictor = await self.coalescer.infer(body["instances"], forward, sent)
            else:
                predictor = await self.client.infer(forward, sent, json_length)
        except (PredictorRejected, PredictorError) as e:
            metrics.PREDICTOR_ERRORS.labels(self.name, str(e.status)).inc()
            raise
        answer = predictor.doc
        if protocol != self.client.protocol:
            answer_id = _v2_id(body) or request_id  # the client's V2 id, whatever x-request-id says
            answer = answer_in(protocol, answer, self.name, predictor.version or self.version, answer_id)
        revision = self._gateway_revision(headers)
        if self.monitor_process is not None:  # bytes to the monitor process, in its pipe before the answer leaves
            self.monitor_process.observe(
                protocol,
                received or _request_json(body, tensors),
                predictor.content
                if protocol == self.client.protocol and predictor.content is not None
                else orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
                request_id,
                predictor.version,
                revision,
                self.rejected_requests,
                decoded.n_rows,
            )
        else:
            observed = (body, tensors, decoded, answer, request_id, predictor.version, revision)
            if self.observer.capture.journal is None:  # once the answer is written (before the next callback)
                asyncio.get_running_loop().call_soon(self.observer.observe, *observed)
            else:  # journaled before the answer leaves: a kill after it loses no record
                self.observer.observe(*observed)
        if self.mirror is not None:  # a share to the shadow candidate, in the background (mirror.py)
            self.mirror.after_answer(
                forward,
                sent,
                json_length,
                request_id,
                predictor,
                self.options.revision,
                predictor.version or self.version,
            )
        return answer, predictor

    def _gateway_revision(self, headers: dict[str, str]) -> str | None:
        """The role the gateway gave this request (``x-kfloop-revision``), when the gateway signed it
        with the control token; from anyone else the header is ignored."""
        role = headers.get(REVISION_HEADER)
        return role if signature_matches(self.token, role, headers.get(REVISION_SIGNATURE_HEADER)) else None

    def _v2_tensors(self, body: Any) -> list[Tensor]:
        try:
            return v2_tensors(body)
        except InvalidRequest as e:
            self.rejected_requests += 1
            raise InvalidInput(str(e)) from e

    def _decode(self, body: Any, tensors: list[Tensor] | None, raw: bytes | None = None) -> Decoded:
        try:
            if tensors is not None:
                return self.decoder.decode_v2_inputs(tensors)
            return self.decoder.decode_v1(body, raw)
        except InvalidRequest as e:
            self.rejected_requests += 1
            raise InvalidInput(str(e)) from e

    def parts(self) -> tuple:
        """The drift monitor, capture writer, outbox and forwarding coalescer (for the metrics collector)."""
        source = self.monitor_process if self.monitor_process is not None else self.observer
        return (*source.parts(), self.coalescer)


def _request_id(headers: dict[str, str], v2_id: str | None) -> str:
    """The client's ``x-request-id`` or ``ce-id`` header, else the V2 request id, else a new id. An id
    goes out in a header: one over ``kfloop.names.MAX_REQUEST_ID_BYTES`` or not printable ASCII is a 400."""
    return request_id_of(headers, v2_id) or os.urandom(16).hex()  # a uuid4's 128 random bits, at a quarter of its cost


def _instances_only(body: Any, forward: Any) -> bool:
    """A V1 request of nothing but ``instances``, forwarded as received: one the coalescer may combine."""
    return (
        isinstance(forward, bytes)
        and isinstance(body, dict)
        and len(body) == 1
        and isinstance(body.get("instances"), list)
    )


def _v2_id(body: Any) -> str | None:
    """The V2 request's own ``id`` (a parsed body or a KServe ``InferRequest``), None without one."""
    value = body.id if isinstance(body, InferRequest) else body.get("id") if isinstance(body, dict) else None
    return value or None


def _checked(check, body: Any):
    try:
        return check(body)
    except InvalidRequest as e:
        raise InvalidInput(str(e)) from e


def _request_json(body: Any, tensors: list[Tensor] | None) -> bytes:
    """A request that did not come as plain JSON (KServe's path: a parsed V1 body, or V2 tensors, binary
    ones too) as JSON, for the monitor process."""
    if tensors is None:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    inputs = [
        {"name": t.name, "shape": list(t.shape), "datatype": t.datatype, "data": plain_values(t.data)} for t in tensors
    ]
    return orjson.dumps({"inputs": inputs})


def _close_soon(client: PredictorClient) -> None:
    """Close the predictor connections if the event loop still runs (the process is exiting anyway)."""
    try:
        asyncio.get_running_loop().create_task(client.aclose())
    except RuntimeError:
        pass


# -- entry point -----------------------------------------------------------------------------------


DEFAULTS = TransformerOptions()  # the flags' defaults: written once, in TransformerOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=__doc__.split("\n")[0])
    add = parser.add_argument
    add_listen_flags(parser)
    add(
        "--model_dir",
        default=None,
        help=f"The model bundle (schema and drift detector): a folder, a file:// URL, or a registry reference "
        f"NAME:VERSION / NAME@production (fetched from KFLOOP_* storage). Default: {DEFAULT_MODEL_DIR} "
        f"when it is a folder, else <model_name>@production",
    )
    add(
        "--model_version",
        default=None,
        help="Version captured and reported (default: the registered version of a registry reference)",
    )
    add("--revision", default=DEFAULTS.revision, help="Which deployment this is (stable, canary), recorded in captures")
    add("--drift_window", type=int, default=DEFAULTS.drift_window, help="Rows per drift check")
    add(
        "--drift_backend",
        choices=BACKENDS,
        default=None,
        help="Drift test implementation (default: the one the detector was saved with)",
    )
    add(
        "--drift_queue_rows",
        type=int,
        default=DEFAULTS.drift_queue_rows,
        help="Rows waiting for the drift thread before new rows are dropped (counted)",
    )
    add(
        "--drift_cpu_share",
        type=float,
        default=DEFAULTS.drift_cpu_share,
        help="Most of a core drift checks take: after a check, rows are not checked for (1/share - 1) times "
        "its duration (counted as skipped); 1 checks every row",
    )
    add(
        "--drift_versions",
        type=int,
        default=DEFAULTS.drift_versions,
        help="Answering model versions drift-checked at once, each against its own schema and drift reference "
        "(loaded from the registry when a version first answers; the least recently served is retired)",
    )
    add(
        "--predictor_rows",
        choices=("as_sent", "encoded"),
        default="as_sent",
        help="What the predictor gets: the request as sent (kfloop's predictor), or every request rebuilt "
        "from the decoded rows; with --predictor_protocol v1, rows of numbers in schema order (KServe's stock "
        "kserve-xgbserver runtime, all-numeric models)",
    )
    add("--sink_url", default=None, help="CloudEvents sink for drift events (default: $K_SINK)")
    add("--event_source", default=None, help="CloudEvents source of drift events (default: kfloop/<model_name>)")
    add("--outbox_backoff_max", type=float, default=60.0, help="Longest wait between delivery attempts (s)")
    add(
        "--capture_format",
        choices=sorted(FORMATS),
        default=DEFAULTS.capture_format,
        help="Capture object format: parquet (typed columns, ~5x less of the writer's CPU per row than JSON "
        "Lines at 100-row requests of 30 features) or jsonl (one record a line)",
    )
    add(
        "--capture_batch_size",
        type=int,
        default=DEFAULTS.capture_batch_size,
        help="Capture records per stored object (at most)",
    )
    add(
        "--capture_flush_seconds",
        type=float,
        default=DEFAULTS.capture_flush_seconds,
        help="Longest time a capture record waits in memory",
    )
    add(
        "--capture_journal",
        default=None,
        help="Local folder where capture records are journaled before the answer leaves and replayed at start "
        "(a killed transformer then loses none; one transformer per folder). kfloop serve sets it",
    )
    add(
        "--capture_max_buffer",
        type=int,
        default=DEFAULTS.capture_max_buffer,
        help="Capture records buffered in memory before new ones are dropped (counted)",
    )
    add(
        "--max_batch_size",
        type=int,
        default=DEFAULTS.max_batch_size,
        help="Most rows accepted in one request (400 above)",
    )
    add(
        "--monitor_process",
        type=strtobool,
        default=DEFAULTS.monitor_process,
        help="Capture and check for drift in a child process with its own GIL (monitor_process.py), so that "
        "neither pauses the requests; false: in this process. With --capture_journal always in this process",
    )
    add("--max_body_bytes", type=int, default=DEFAULTS.max_body_bytes, help="Largest request body (413 above)")
    add("--predictor_max_connections", type=int, default=100, help="Pooled connections to the predictor")
    add(
        "--predictor_coalesce_calls",
        type=int,
        default=DEFAULTS.coalesce_calls,
        help="Predictor calls in flight before concurrent V1 requests (untraced, same authorization) wait and go "
        "to the predictor together, in one call (forward_batching.py); 0: every request forwarded on its own",
    )
    add(
        "--mirror_poll_seconds",
        type=float,
        default=5.0,
        help="How often the mirror state (shadow traffic: kfloop rollout shadow) is read from the store; 0: off",
    )
    add("--mirror_in_flight", type=int, default=64, help="Mirrored requests in flight at most (more are dropped)")
    add("--mirror_timeout", type=float, default=10.0, help="Longest wait for the shadow candidate's answer (s)")
    add("--mirror_flush_seconds", type=float, default=2.0, help="Longest time a shadow record waits in memory")
    add(
        "--shutdown_seconds",
        type=float,
        default=DEFAULTS.shutdown_seconds,
        help="Longest wait at shutdown for queued drift rows and buffered captures",
    )
    add(
        "--request_logging",
        type=strtobool,
        default=False,
        help="Log every request (uvicorn access log and KServe latency lines)",
    )
    return parser


def resolve_sink(args: argparse.Namespace, settings: Settings) -> str | None:
    """``--sink_url``, else ``K_SINK`` (set by a Knative SinkBinding), else None (events stay in the outbox)."""
    return args.sink_url or settings.sink_url or None


def ce_extensions(settings: Settings) -> dict:
    """The extension attributes of Knative's ``K_CE_OVERRIDES`` (``{"extensions": {...}}``)."""
    raw = settings.ce_overrides
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("extensions") or {})
    except (ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f'K_CE_OVERRIDES={raw!r} is not JSON of the form {{"extensions": {{...}}}}') from e


def _check_args(args: argparse.Namespace) -> None:
    if not args.predictor_host:
        raise ConfigError("--predictor_host is required: the host[:port] of the predictor to forward to")
    if args.predictor_protocol not in ("v1", "v2"):
        raise ConfigError(
            f"--predictor_protocol {args.predictor_protocol}: the drift transformer forwards over HTTP; use v1 or v2"
        )
    if args.protocol != "v1" and args.predictor_protocol == "v1":
        logger.warning("--protocol %s is ignored by KServe 0.20; use --predictor_protocol", args.protocol)
    if args.enable_grpc:
        raise ConfigError(
            "--enable_grpc true: the drift transformer serves HTTP only (kfloop's InferenceService routes "
            "HTTP: a Knative revision exposes one port); send gRPC to a predictor started with --enable_grpc true"
        )
    if args.predictor_coalesce_calls < 0:
        raise ConfigError(
            f"--predictor_coalesce_calls {args.predictor_coalesce_calls}: give the predictor calls in flight "
            f"before requests are combined (0 forwards every request on its own)"
        )
    if args.workers != 1:
        raise ConfigError(
            f"--workers {args.workers}: the transformer runs one process (its drift window and "
            f"capture buffer live in it); scale with replicas instead"
        )


def options_from(args: argparse.Namespace, settings: Settings) -> TransformerOptions:
    return TransformerOptions(
        revision=args.revision,
        event_source=args.event_source,
        drift_window=args.drift_window,
        drift_backend=args.drift_backend,
        drift_queue_rows=args.drift_queue_rows,
        drift_cpu_share=args.drift_cpu_share,
        drift_versions=args.drift_versions,
        encoded_rows=args.predictor_rows == "encoded",
        max_batch_size=args.max_batch_size,
        coalesce_calls=args.predictor_coalesce_calls,
        max_body_bytes=args.max_body_bytes,
        capture_format=args.capture_format,
        capture_batch_size=args.capture_batch_size,
        capture_flush_seconds=args.capture_flush_seconds,
        capture_max_buffer=args.capture_max_buffer,
        capture_journal=args.capture_journal,
        monitor_process=args.monitor_process,
        shutdown_seconds=args.shutdown_seconds,
        ce_extensions=ce_extensions(settings),
    )


def predictor_config(args: argparse.Namespace) -> PredictorConfig:
    return PredictorConfig(
        args.predictor_host,
        args.predictor_protocol,
        args.predictor_use_ssl,
        args.predictor_request_timeout_seconds,
        args.predictor_request_retries,
        args.enable_predictor_health_check,
    )


def main(argv: list[str] | None = None) -> None:
    run_entry_point(build_parser(), serve, argv)


def serve(args: argparse.Namespace) -> None:
    """Load the bundle and detector and run the KServe model server until it is stopped."""
    _check_args(args)
    settings = Settings.from_env()
    default_dir = DEFAULT_MODEL_DIR if Path(DEFAULT_MODEL_DIR).is_dir() else f"{args.model_name}@production"
    model_dir, registered_version = resolve_model(args.model_dir or default_dir, settings)
    config = predictor_config(args)
    client = PredictorClient(
        config.predictor_base_url,
        args.model_name,
        args.predictor_protocol,
        config.timeout,
        config.retries,
        args.predictor_max_connections,
    )
    store = open_capture_store(settings)
    options, version = options_from(args, settings), args.model_version or registered_version
    sink = resolve_sink(args, settings)
    monitor = outbox = None
    if options.monitor_process and options.capture_journal is None:  # (a journal is written before the answer)
        monitor = MonitorProcess(
            child_config(args.model_name, model_dir, version or "unknown", options, sink, args.outbox_backoff_max)
        )
    else:
        outbox = open_outbox(settings, args.model_name, args.revision, sink, args.outbox_backoff_max, store)
    model = DriftTransformer(
        args.model_name,
        model_dir,
        store,
        outbox,
        client,
        options,
        version,
        token=read_token(settings.control_token_path),
        references=lambda version: fetch_registered(f"{args.model_name}:{version}", settings)[0],
        mirror=None
        if args.mirror_poll_seconds <= 0
        else TrafficMirror(
            args.model_name,
            store,
            client.path,
            poll_seconds=args.mirror_poll_seconds,
            flush_seconds=args.mirror_flush_seconds,
            max_in_flight=args.mirror_in_flight,
            timeout=args.mirror_timeout,
        ),
        monitor_process=monitor,
    )
    model.load()
    metrics.register_collector(metrics.TransformerCollector(model.name, model.parts))
    app = kserve.model_server.app
    add_error_handler(app)
    add_error_handlers(app)
    wrap_application(
        app,
        lambda stack: BodySizeLimit(
            metrics.RequestCounter(InferenceFastPath(stack, model, enabled=not args.request_logging)),
            max_bytes=args.max_body_bytes,
        ),
    )
    install_event_loop(args.event_loop)
    server = model_server(args, predictor_config=config)
    server.dataplane = VersionedDataPlane(model_registry=server.registered_models)
    freeze_heap()
    # the capture writer's and the drift monitor's threads run Python between their numpy/orjson calls; a
    # request waiting for the GIL waits up to one switch interval (default 5 ms) each time it wants it back
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server.start([model])


SWITCH_INTERVAL_S = 0.001  # against the default 5 ms, two transformers behind one predictor, load alternating
# between them: p99 at 1 row c=16 ~12% lower, 100-row requests at c=8 15-30% more per second


if __name__ == "__main__":
    main()

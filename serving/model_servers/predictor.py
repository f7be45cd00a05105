"""The KServe predictor for kfloop model bundles, on the V1 and V2 (open inference) protocols.

An adapter in the shape of KServe's xgbserver: ``load()`` verifies the bundle and loads the
booster from UBJSON; ``infer_json()`` (plain JSON requests, through ``serving/fast_path.py``, with
requested outputs and binary output data) and ``predict()`` (KServe's own path: binary V2 bodies,
CloudEvents, gRPC when ``--enable_grpc true`` (off by default), and every request with
``--request_logging``) decode the request with ``kfloop.inference.requests.RequestDecoder``
(the schema's encoding, as in training), runs the booster off the event loop (by default through
a ``MicroBatcher`` that predicts the rows of concurrent requests in one call) and encodes the
answer with ``kfloop.inference.responses``. A malformed request (or a body not sent as JSON) is
HTTP 400 with a message naming the field (and so is a request id, ``x-request-id`` or the V2 ``id``,
over ``kfloop.names.MAX_REQUEST_ID_BYTES`` or not printable ASCII); unseen categorical values are
served as missing and counted in
``kfloop_predictor_unseen_categories_total`` on ``/metrics``. The model version in responses (the
V2 body, the ``x-kfloop-model-version`` header of V1 and V2 answers) and metadata is
``--model_version``, else the registered version of a registry reference.

Run: ``python -m kfloop.serving.model_servers.predictor --model_dir /mnt/models --model_name churn``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import kserve
import kserve.model_server
import numpy as np
import orjson
import xgboost as xgb
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import strtobool
from prometheus_client import Counter

from kfloop.errors import ConfigError, InvalidRequest
from kfloop.inference.requests import DEFAULT_MAX_BATCH, Decoded, RequestDecoder
from kfloop.inference.responses import encode_predictions, encode_v2_output, requested_binary, v1_answer, v2_answer
from kfloop.inference.tensors import v2_input_metadata, v2_output_metadata
from kfloop.names import MODEL_VERSION_HEADER
from kfloop.schema import FeatureSchema
from kfloop.serving.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from kfloop.serving.model_servers.batching import MicroBatcher
from kfloop.serving.model_servers.fast_path import InferenceFastPath, Reply, binary_reply, wrap_application
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
from kfloop.store.bundle import MODEL_FILE, load_schema, verify_bundle
from kfloop.training.booster import DensePredictor, load_model, predict

logger = logging.getLogger(__name__)

# One OpenMP thread per predict call: a call on a few rows is 2-10x slower with more threads, and
# much slower still when another process holds a core (the threads wait on each other).
DEFAULT_NTHREAD = 1
UNSEEN_CATEGORIES = Counter(
    "kfloop_predictor_unseen_categories",
    "Categorical values not seen in training, served as missing",
    ["model_name", "feature"],
)


class XGBoostPredictor(kserve.Model):
    """Serves one kfloop model bundle (``model.ubj`` + ``schema.json``) under ``name``."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        model_version: str | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        micro_batching: bool = True,
        nthread: int = DEFAULT_NTHREAD,
    ):
        super().__init__(name, return_response_headers=True)
        self.model_dir, self.version = Path(model_dir), model_version
        self.max_batch_size, self.micro_batching, self.nthread = max_batch_size, micro_batching, nthread
        self.schema: FeatureSchema | None = None
        self.booster: xgb.Booster | None = None
        self.decoder: RequestDecoder | None = None
        self._batcher: MicroBatcher | None = None
        self._dense: DensePredictor | None = None

    def load(self) -> bool:
        verify_bundle(self.model_dir)
        self.schema = load_schema(self.model_dir)
        self.booster = load_model(self.model_dir / MODEL_FILE)
        self.booster.set_param({"nthread": self.nthread})
        self._dense = DensePredictor(self.booster)  # inplace_predict without its per-call Python work
        self.decoder = RequestDecoder(self.schema, self.max_batch_size)
        if self.micro_batching:
            self._batcher = MicroBatcher(self._predict_rows, max_rows=self.max_batch_size)
        self.ready = True
        logger.info(
            "loaded model %s version %s from %s (%s, %d features)",
            self.name,
            self.version,
            self.model_dir,
            self.schema.task,
            len(self.schema.features),
        )
        return self.ready

    def stop(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        super().stop()

    def get_input_types(self) -> list[dict]:
        return v2_input_metadata(self.schema)

    def get_output_types(self) -> list[dict]:
        return v2_output_metadata(self.schema)

    async def infer_json(self, protocol: str, body: Any, raw: bytes, headers: dict[str, str]) -> Reply:
        """A plain JSON request (``serving/fast_path.py``), answered as KServe's path answers it."""
        request_id_of(headers, body.get("id") if protocol == "v2" and isinstance(body, dict) else None)  # 400: too long
        if protocol == "v1":
            pred = await self._predict(self._decoded(lambda b: self.decoder.decode_v1(b, raw), body))
            doc = v1_answer(encode_predictions(self.schema, pred))
        else:
            binary = _checked_outputs(body)
            pred = await self._predict(self._decoded(self.decoder.decode_v2, body))
            output = encode_v2_output(self.schema, pred)
            doc = v2_answer(self.name, self.version, body.get("id") or str(uuid.uuid4()), output)
            if binary:
                return binary_reply(doc, self._version_header)
        return Reply(orjson.dumps(doc), self._version_header)

    async def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:
        """KServe's path: binary V2 bodies, gRPC, requested outputs, and every request with
        ``--request_logging``."""
        require_json(payload)
        request_id_of(headers, payload.id if isinstance(payload, InferRequest) else None)  # a 400 when too long
        if isinstance(payload, InferRequest):
            check_requested_outputs(payload)
            decoded = self._decoded(self.decoder.decode_v2_inputs, request_tensors(payload))
        else:
            decoded = self._decoded(self.decoder.decode_v1, payload)
        pred = await self._predict(decoded)
        if response_headers is not None:
            response_headers.update(self._version_header)
        if isinstance(payload, InferRequest):
            return self._v2_response(payload, pred)
        return v1_answer(encode_predictions(self.schema, pred))

    @property
    def _version_header(self) -> dict[str, str]:
        return {MODEL_VERSION_HEADER: str(self.version)} if self.version is not None else {}

    def _decoded(self, decode, body: Any) -> Decoded:
        """``decode(body)``, with a malformed request as HTTP 400 and unseen categories counted."""
        try:
            decoded = decode(body)
        except InvalidRequest as e:
            raise InvalidInput(str(e)) from e
        for feature, count in decoded.unseen.items():
            UNSEEN_CATEGORIES.labels(self.name, feature).inc(count)
        return decoded

    async def _predict(self, decoded: Decoded) -> np.ndarray:
        if self._batcher is not None:
            return await self._batcher.run(decoded.X)
        return await asyncio.get_running_loop().run_in_executor(None, self._predict_rows, decoded.X)

    def _predict_rows(self, X: np.ndarray) -> np.ndarray:
        return predict(self._dense, self.schema, X)

    def _v2_response(self, request: InferRequest, pred: np.ndarray) -> InferResponse:
        out = encode_v2_output(self.schema, pred)
        # kserve 0.20's InferResponse.to_grpc tests the truth value of the data (an error for an
        # ndarray) when the request came with raw inputs, so gRPC answers carry a flat list.
        data = out.data.ravel().tolist() if request.from_grpc else out.data
        return InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.version,
            infer_outputs=[InferOutput(out.name, out.shape, out.datatype, data=data)],
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )


def _checked_outputs(body: Any) -> bool:
    """Whether the V2 request asks for binary outputs; an unknown requested output is a 400."""
    try:
        return requested_binary(body)
    except InvalidRequest as e:
        raise InvalidInput(str(e)) from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=__doc__.split("\n")[0])
    add_listen_flags(parser)
    parser.add_argument(
        "--model_dir",
        default="/mnt/models",
        help="The model bundle: a folder, a file:// URL, or a registry reference "
        "NAME:VERSION / NAME:latest / NAME@production (fetched from KFLOOP_* storage)",
    )
    parser.add_argument(
        "--model_version",
        default=None,
        help="Version reported in responses and metadata (default: the registered version "
        "of a registry reference; none for a folder)",
    )
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help="Most rows accepted in one request (HTTP 400 above)",
    )
    parser.add_argument(
        "--micro_batching",
        type=strtobool,
        default=True,
        help="Predict the rows of concurrent requests in one XGBoost call",
    )
    parser.add_argument(
        "--nthread", type=int, default=DEFAULT_NTHREAD, help="XGBoost threads per predict call (0: all cores)"
    )
    parser.add_argument(
        "--max_body_bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="Largest request body accepted (HTTP 413 above)",
    )
    parser.add_argument(
        "--request_logging",
        type=strtobool,
        default=False,
        help="Log every request (uvicorn access log and KServe latency lines); costs 0.1-0.2 ms per request",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    run_entry_point(build_parser(), serve, argv)


def serve(args: argparse.Namespace) -> None:
    """Load the model and run the KServe model server until it is stopped."""
    if args.workers != 1:
        raise ConfigError(
            f"--workers {args.workers}: the predictor runs one process (its body limit and "
            f"micro-batching live in it); scale with replicas instead"
        )
    model_dir, registered_version = resolve_model(args.model_dir)
    model = XGBoostPredictor(
        args.model_name,
        model_dir,
        args.model_version or registered_version,
        args.max_batch_size,
        args.micro_batching,
        args.nthread,
    )
    model.load()
    wrap_application(
        kserve.model_server.app,
        lambda stack: BodySizeLimit(
            InferenceFastPath(stack, model, enabled=not args.request_logging), max_bytes=args.max_body_bytes
        ),
    )
    install_event_loop(args.event_loop)
    server = model_server(args)
    server.dataplane = VersionedDataPlane(model_registry=server.registered_models)
    add_error_handlers(kserve.model_server.app)
    freeze_heap()
    server.start([model])


if __name__ == "__main__":
    main()

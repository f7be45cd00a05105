"""What the drift transformer does with a request once it is answered: capture it and check it for drift.

An ``Observer`` owns the monitoring side of one transformer: the ``CaptureWriter`` (captures to the
object store), the ``VersionedDrift`` monitors (drift, data-quality and prediction-drift windows per
answering version) and the ``Outbox`` their events go through. ``observe`` takes one answered request
(the decoded rows, the request's body or tensors, the answer) and never raises into the request.

It runs in the transformer's own process (``--monitor_process false``, and always with
``--capture_journal``, whose records are journaled before the answer leaves) or in the monitor process
(``monitor_process.py``), which rebuilds the same arguments from the bytes the transformer sends it.
Nothing here imports KServe: the monitor process starts without its web stack.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfloop.config import Settings
from kfloop.errors import ConfigError, StorageError
from kfloop.events.outbox import Outbox
from kfloop.inference.requests import DEFAULT_MAX_BATCH, Decoded, RequestDecoder
from kfloop.inference.responses import answer_predictions
from kfloop.inference.tensors import Tensor
from kfloop.monitoring.capture import CaptureWriter
from kfloop.monitoring.capture_rows import request_capture
from kfloop.monitoring.constraints import load_baseline
from kfloop.monitoring.drift import load_detector
from kfloop.monitoring.drift_monitor import DEFAULT_CPU_SHARE, DEFAULT_MAX_PENDING_ROWS, DriftMonitor
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.monitoring.quality_window import WindowedQuality
from kfloop.monitoring.versions import DEFAULT_MAX_VERSIONS, VersionedDrift, VersionReference, load_reference
from kfloop.monitoring.window_log import WindowLog
from kfloop.names import captures_prefix, key_segment
from kfloop.schema import FeatureSchema
from kfloop.store.bundle import DRIFT_DIR, load_schema
from kfloop.store.objects import ObjectStore, S3Store, open_store

logger = logging.getLogger("kfloop.serving.model_servers.observer")


@dataclasses.dataclass(frozen=True)
class MonitorOptions:
    """How the transformer captures and checks what it serves (its flags of the same names)."""

    revision: str = "stable"
    event_source: str | None = None  # default kfloop/<model_name>
    drift_window: int = 500
    drift_backend: str | None = None  # None: the backend the detector was saved with
    drift_queue_rows: int = DEFAULT_MAX_PENDING_ROWS
    drift_cpu_share: float = DEFAULT_CPU_SHARE
    drift_versions: int = DEFAULT_MAX_VERSIONS
    max_batch_size: int = DEFAULT_MAX_BATCH
    capture_format: str = "parquet"
    capture_batch_size: int = 5000
    capture_flush_seconds: float = 5.0
    capture_max_buffer: int = 50_000
    capture_journal: str | None = None  # a local folder: answered requests' records survive a kill
    shutdown_seconds: float = 10.0
    ce_extensions: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, options: MonitorOptions) -> MonitorOptions:
        """The monitoring part of ``options`` (a ``TransformerOptions`` has more)."""
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls)})


class Observer:
    """Captures and drift-checks the answered requests of model ``name`` (bundle ``model_dir``, served
    as ``version``); ``options`` says how; ``references`` gives the
    bundle folder of another answering version (the registry's), None: no other version is checked."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        version: str,
        store: ObjectStore,
        outbox: Outbox,
        options: MonitorOptions,
        references: Callable[[str], Path] | None = None,
        schema: FeatureSchema | None = None,
        rejected: Callable[[], int] | None = None,
    ):
        self.name, self.model_dir, self.version = name, Path(model_dir), version
        self.store, self.outbox, self.options, self.references = store, outbox, options, references
        self.schema = schema or load_schema(self.model_dir)
        self.decoder = RequestDecoder(self.schema, options.max_batch_size)
        # the requests the transformer refused (400) so far, for the data-quality check: ``rejected``, else
        # this count (the monitor process sets it from each request's frame)
        self.rejected_requests = 0
        self.rejected = rejected or (lambda: self.rejected_requests)
        detector = load_detector(self.model_dir / DRIFT_DIR, backend=options.drift_backend)
        self.backend = detector.backend
        baseline = load_baseline(self.model_dir / DRIFT_DIR, self.schema)
        self.capture = CaptureWriter(
            store,
            key_segment(name),
            options.capture_batch_size,
            options.capture_flush_seconds,
            options.capture_max_buffer,
            options.capture_format,
            journal_dir=options.capture_journal,
        )
        self.monitor = VersionedDrift(
            self.schema,
            self._load_reference,
            self._version_monitor,
            max_versions=options.drift_versions,
            max_batch=options.max_batch_size,
            stop_timeout_s=options.shutdown_seconds,
        )
        self.monitor.add(VersionReference(version, self.schema, detector, baseline))
        self.outbox.start()

    @property
    def capture_location(self) -> str:
        return prefix_uri(self.store, captures_prefix(key_segment(self.name), self.version))

    def observe(
        self,
        body: Any,
        tensors: list[Tensor] | None,
        decoded: Decoded,
        answer: dict,
        request_id: str,
        served: str | None,
        revision: str | None,
        at: float | None = None,
    ) -> None:
        """Capture the rows (as of the version that answered, ``served``, and the gateway's
        ``revision``; else the transformer's) answered at ``at`` (epoch seconds, default now) and queue
        them for drift detection; never raises."""
        version = str(served or answer.get("model_version") or self.version)
        predictions = unseen = None
        try:  # the request's columns as they are: no work per row here (the writer's thread does it)
            capture = request_capture(
                self.name,
                version,
                revision or self.options.revision,
                request_id,
                time.time() if at is None else at,  # formatted on the writer's thread
                self.decoder.names,  # (the schema's, computed once)
                decoded,
                answer,
                body=body if tensors is None else None,
                tensors=tensors,
            )
            self.capture.add(capture)
            unseen = {name: len(rows) for name, rows in capture.unseen.items()}  # for the data-quality window
            predictions = answer_predictions(answer)  # for the prediction-drift window
        except Exception:  # capture is best effort: the client already has its answer
            logger.exception("could not capture request %s", request_id)
        self.monitor.submit(
            version,
            decoded,
            lambda decoder: decoder.decode_v2_inputs(tensors) if tensors is not None else decoder.decode_v1(body),
            predictions,
            unseen,
        )

    def stop(self, timeout: float) -> None:
        """Check the queued rows, write the buffered captures, stop the outbox (within about 3 x ``timeout``)."""
        self.monitor.stop(timeout)
        if not self.capture.close(timeout):
            logger.warning("capture records still unwritten at shutdown: %d dropped in all", self.capture.dropped)
        self.outbox.stop(timeout, drain_s=timeout)  # with S3, what stays undelivered moves to the store

    def parts(self) -> tuple:
        """The drift monitor, capture writer and outbox (for the metrics collector)."""
        return self.monitor, self.capture, self.outbox

    def _version_monitor(self, reference: VersionReference) -> DriftMonitor:
        """The drift monitor of one answering version: its own windows, its events naming it."""
        opts, version = self.options, reference.version
        context = {
            "model": self.name,
            "model_version": version,
            "revision": opts.revision,
            "capture_location": prefix_uri(self.store, captures_prefix(key_segment(self.name), version)),
        }
        return DriftMonitor(
            WindowedDrift(reference.detector, opts.drift_window),
            self.outbox,
            opts.event_source or f"kfloop/{self.name}",
            context,
            max_pending_rows=opts.drift_queue_rows,
            extensions=opts.ce_extensions,
            cpu_share=opts.drift_cpu_share,
            window_log=WindowLog(self.store),  # every checked window, for the report
            quality=None
            if reference.baseline is None
            else WindowedQuality(reference.baseline, opts.drift_window, self.rejected),
        )

    def _load_reference(self, version: str) -> VersionReference:
        """The schema and drift reference of ``version`` from its registered bundle (on the loader thread)."""
        if self.references is None:
            raise ConfigError(f"version {version!r} answered, but this transformer has no registry to load it from")
        return load_reference(self.references(version), version, self.options.drift_backend)


def prefix_uri(store: ObjectStore, prefix: str) -> str:
    """The URI of a key prefix, ending in "/" for every store (LocalStore's file URIs drop it)."""
    return store.uri(prefix.rstrip("/")) + "/"


def open_capture_store(settings: Settings) -> ObjectStore:
    """The object store for captures; an unreachable S3 at startup is not fatal (writes are retried)."""
    try:
        return open_store(settings)
    except StorageError as e:
        if not settings.uses_s3:
            raise
        logger.warning("capture store not reachable at startup (%s); capture writes will be retried", e)
        return S3Store.from_settings(settings, create_bucket=False)


def open_outbox(settings: Settings, name: str, revision: str, sink: str | None, backoff_max: float, store) -> Outbox:
    """The durable outbox of the drift events of model ``name``'s ``revision``, delivering to ``sink``."""
    return Outbox.for_settings(
        settings,
        f"drift-{key_segment(name)}-{key_segment(revision)}",
        sink,
        backoff_max=backoff_max,
        spill=store if settings.uses_s3 else None,  # on a cluster KFLOOP_HOME is an emptyDir
    )

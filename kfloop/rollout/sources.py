"""Where a canary analysis reads each revision's traffic: the local gateway or Prometheus.

A source has ``begin(model) -> mark`` (taken when a step's traffic split is in place) and
``collect(model, stable, canary, mark) -> (RevisionStats, RevisionStats)``: what each ``Side``
(a model version, its Knative revision name on a cluster, and whether it only gets mirrored
traffic) did since the mark. Requests, errors and latency come from the serving layer; the
predictions and the quality on labeled rows come from the captures on the object store in both
cases (``kfloop.rollout.stats``), matched by model version, which is what tells two revisions
apart in the captures on a cluster too.

- ``LocalStatsSource``: the ``kfloop serve`` gateway's per-revision ``windows`` (admin status),
  differenced between the mark and now; a shadow side's numbers come from the shadow records
  (``KFLOOP_HOME/serving/<model>/shadow/v<N>.jsonl``) appended since the mark.
- ``PrometheusSource``: Prometheus' HTTP API (``GET /api/v1/query``), over the range from the mark
  to now, with one of three query sets (``FLAVORS``, chosen by ``flavor``; ``--prometheus_queries``):

  - ``knative`` (the default, ``KNATIVE_QUERIES``): the OpenTelemetry metric Knative Serving 1.19+
    exports from each revision's queue-proxy, ``kn.serving.invocation.duration`` (seconds), which
    Prometheus names ``kn_serving_invocation_duration_seconds_{bucket,count,sum}`` with the status in
    ``http_response_status_code``::

        sum(increase(kn_serving_invocation_duration_seconds_count{namespace="NS",REVLABEL="REV"}[Ws]))
        ... the same with http_response_status_code=~"5.."
        1000 * histogram_quantile(0.99, sum by (le) (increase(
            kn_serving_invocation_duration_seconds_bucket{namespace="NS",REVLABEL="REV"}[Ws])))

    The series are selected by the scrape's labels, not the metric's own attributes: ``namespace``
    and the pod label ``serving.knative.dev/revision`` as ``REVLABEL`` (``revision_label``, default
    ``serving_knative_dev_revision``), which the PodMonitor of ``manifests/overlays/auto-rollout``
    adds (``podTargetLabels``), as does the usual annotation-based ``kubernetes-pods`` job.
  - ``knative-legacy`` (``KNATIVE_LEGACY_QUERIES``): the OpenCensus names of Knative before 1.19,
    ``revision_app_request_count`` / ``revision_app_request_latencies`` (milliseconds), selected by
    their own ``namespace_name`` / ``revision_name`` labels.
  - ``kfloop`` (``KFLOOP_QUERIES``): the kfloop predictor's own ``request_predict_seconds``
    histogram (KServe's, observed for each answered prediction) from the revision's pods, with
    the 5xx answers its queue-proxy counted (the predictor counts no errors of its own) added to
    the requests. The pods' metrics reach Prometheus through KServe's metric aggregation
    (``serving.kserve.io/enable-metric-aggregation``: queue-proxy serves its own and the
    container's metrics on port ``aggr-metric``, 9088), which the base InferenceService turns on.

  A shadow side (blue-green on a cluster: the candidate gets only mirrored traffic, from the model's
  transformer) is not queried: its requests, errors, p99 and predictions come from the shadow records
  on the object store (``kfloop.rollout.mirror``), written since the mark.

  Any template may be replaced; placeholders: ``{namespace}``, ``{revision}``, ``{isvc}``,
  ``{window}`` (whole seconds), ``{revision_label}``. Ranges need two scrapes: hold steps for a few
  minutes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import httpx

from kfloop.auth import TokenFile
from kfloop.errors import ConfigError, KfloopError, ModelNotFound
from kfloop.names import ADMIN_MODELS_PATH
from kfloop.rollout.analysis import RevisionStats
from kfloop.rollout.mirror import ShadowRecords, shadow_stats
from kfloop.rollout.stats import CaptureReader, histogram_quantile, labeled_quality, quantile, window_delta
from kfloop.store.objects import ObjectStore
from kfloop.store.registry import Registry
from kfloop.timestamps import rfc3339

_SELECTOR = '{{namespace="{namespace}",{revision_label}="{revision}"'
_5XX = ',http_response_status_code=~"5.."'
KNATIVE_QUERIES = {
    "requests": "sum(increase(kn_serving_invocation_duration_seconds_count" + _SELECTOR + "}}[{window}s]))",
    "errors": "sum(increase(kn_serving_invocation_duration_seconds_count" + _SELECTOR + _5XX + "}}[{window}s]))",
    "p99_ms": "1000 * histogram_quantile(0.99, sum by (le) (increase(kn_serving_invocation_duration_seconds_bucket"
    + _SELECTOR
    + "}}[{window}s])))",
}
KNATIVE_LEGACY_QUERIES = {
    "requests": 'sum(increase(revision_app_request_count{{namespace_name="{namespace}",revision_name="{revision}"}}'
    "[{window}s]))",
    "errors": 'sum(increase(revision_app_request_count{{namespace_name="{namespace}",revision_name="{revision}",'
    'response_code_class="5xx"}}[{window}s]))',
    "p99_ms": "histogram_quantile(0.99, sum by (le) (increase(revision_app_request_latencies_bucket"
    '{{namespace_name="{namespace}",revision_name="{revision}"}}[{window}s])))',
}
_KFLOOP_ERRORS = "sum(increase(kn_serving_invocation_duration_seconds_count" + _SELECTOR + _5XX + "}}[{window}s]))"
KFLOOP_QUERIES = {
    "requests": "(sum(increase(request_predict_seconds_count"
    + _SELECTOR
    + "}}[{window}s])) or vector(0)) + ("
    + _KFLOOP_ERRORS
    + " or vector(0))",
    "errors": _KFLOOP_ERRORS,
    "p99_ms": "1000 * histogram_quantile(0.99, sum by (le) (increase(request_predict_seconds_bucket"
    + _SELECTOR
    + "}}[{window}s])))",
}
FLAVORS = {"knative": KNATIVE_QUERIES, "knative-legacy": KNATIVE_LEGACY_QUERIES, "kfloop": KFLOOP_QUERIES}


@dataclasses.dataclass(frozen=True)
class Side:
    """One revision in a comparison: its model version, Knative revision name (clusters), and
    whether it only receives mirrored (shadow) traffic."""

    version: int
    revision: str | None = None
    shadow: bool = False


class _StoreStats:
    """Predictions and quality of a side, read from the captures and labels on ``store``."""

    def __init__(self, store: ObjectStore | None):
        self.store = store
        self._readers: dict[str, CaptureReader] = {}
        self._schemas: dict[tuple[str, int], dict | None] = {}
        self._shadow: dict[str, ShadowRecords] = {}

    def add(self, model: str, side: Side, since: str, stats: RevisionStats) -> RevisionStats:
        if self.store is None:
            return stats
        reader = self._readers.setdefault(model, CaptureReader(self.store, model))
        return dataclasses.replace(
            stats,
            predictions=reader.predictions(side.version, since),
            quality=labeled_quality(self.store, model, self._schema(model, side.version), side.version, since),
        )

    def shadow(self, model: str, side: Side, since: str) -> RevisionStats:
        """A side that only gets mirrored traffic on a cluster: its numbers and predictions from the
        shadow records the model's transformer wrote since ``since`` (``kfloop.rollout.mirror``)."""
        if self.store is None:
            raise ConfigError(f"the shadow side of {model} (version {side.version}) is read from the object store")
        reader = self._shadow.setdefault(model, ShadowRecords(self.store, model))
        found = shadow_stats(reader.records(side.version, since))
        return RevisionStats(side.version, found.requests, found.errors, found.p99_ms, found.predictions)

    def _schema(self, model: str, version: int) -> dict | None:
        if (model, version) not in self._schemas:
            try:
                self._schemas[(model, version)] = Registry(self.store).get(model, version).schema
            except ModelNotFound:
                self._schemas[(model, version)] = None
        return self._schemas[(model, version)]


class LocalStatsSource:
    """Per-revision traffic from the ``kfloop serve`` gateway at ``gateway_url``, predictions and
    quality from ``store`` (the one ``kfloop serve`` captures to)."""

    name = "local"

    def __init__(
        self, gateway_url: str, store: ObjectStore | None, timeout: float = 10.0, token_file: Path | None = None
    ):
        self.gateway_url, self.timeout = gateway_url.rstrip("/"), timeout
        self.token = TokenFile(token_file)  # the gateway's admin API wants the control token
        self._store = _StoreStats(store)

    def begin(self, model: str) -> dict:
        status = self._status(model)
        shadow = status.get("shadow") or {}
        sizes = {}
        if shadow.get("records"):
            sizes[int(shadow["version"])] = _size(Path(shadow["records"]))
        return {"time": rfc3339(), "windows": status.get("windows") or {}, "shadow_sizes": sizes}

    def collect(self, model: str, stable: Side | None, canary: Side | None, mark: dict):
        status = self._status(model)
        return tuple(self._side(model, status, side, mark) for side in (stable, canary))

    def _side(self, model: str, status: dict, side: Side | None, mark: dict) -> RevisionStats:
        if side is None:
            return RevisionStats()
        if side.shadow:
            stats = self._shadow(status, side, mark)
        else:
            key = str(side.version)
            delta = window_delta((status.get("windows") or {}).get(key), mark["windows"].get(key))
            stats = RevisionStats(
                side.version,
                delta["requests"],
                delta["errors"],
                histogram_quantile(0.99, delta["bounds"], delta["counts"]),
            )
        return self._store.add(model, side, mark["time"], stats)

    def _shadow(self, status: dict, side: Side, mark: dict) -> RevisionStats:
        shadow = status.get("shadow") or {}
        if int(shadow.get("version") or 0) != side.version or not shadow.get("records"):
            return RevisionStats(side.version)
        lines = _read_from(Path(shadow["records"]), mark["shadow_sizes"].get(side.version, 0))
        answers = [json.loads(line)["shadow"] for line in lines]
        errors = sum(1 for a in answers if "error" in a or int(a.get("status", 0)) >= 500)
        latencies = [a["latency_ms"] for a in answers if "latency_ms" in a]
        return RevisionStats(side.version, len(answers), errors, quantile(latencies, 0.99))

    def _status(self, model: str) -> dict:
        url = f"{self.gateway_url}{ADMIN_MODELS_PATH}/{model}"
        try:
            response = httpx.get(url, headers=self.token.headers(), timeout=self.timeout, trust_env=False)
        except httpx.HTTPError as e:
            raise KfloopError(f"cannot read the gateway's counters at {url}: {type(e).__name__}: {e}") from e
        if response.status_code != 200:
            raise KfloopError(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> list[bytes]:
    """Complete lines appended to ``path`` after byte ``offset``."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return []
    return [line for line in data.split(b"\n")[:-1] if line.strip()]


class PrometheusSource:
    """Per-revision traffic from Prometheus at ``url`` (see the module docstring for the queries),
    predictions and quality from ``store`` when given."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        namespace: str,
        isvc: str | None = None,
        store: ObjectStore | None = None,
        *,
        flavor: str = "knative",
        queries: dict | None = None,
        revision_label: str = "serving_knative_dev_revision",
        timeout: float = 10.0,
        clock=time.time,
    ):
        if flavor not in FLAVORS:
            raise ConfigError(f"Prometheus query flavor {flavor!r} is not one of {sorted(FLAVORS)}")
        self.url, self.namespace, self.isvc = url.rstrip("/"), namespace, isvc
        self.queries = {**FLAVORS[flavor], **(queries or {})}
        self.revision_label, self.timeout, self.clock = revision_label, timeout, clock
        self._store = _StoreStats(store)

    def begin(self, model: str) -> dict:
        return {"time": rfc3339(), "started": self.clock()}

    def collect(self, model: str, stable: Side | None, canary: Side | None, mark: dict):
        window = max(1, math.ceil(self.clock() - mark["started"]))
        return tuple(self._side(model, side, window, mark) for side in (stable, canary))

    def _side(self, model: str, side: Side | None, window: int, mark: dict) -> RevisionStats:
        if side is None:
            return RevisionStats()
        if side.shadow:  # mirrored by the transformer to the candidate's own InferenceService
            return self._store.shadow(model, side, mark["time"])
        if not side.revision:
            raise ConfigError(
                f"version {side.version} of {model} has no Knative revision name to query "
                f"Prometheus with (InferenceService {self.isvc or model} in {self.namespace})"
            )
        values = {
            name: self.query(
                self.queries[name].format(
                    namespace=self.namespace,
                    revision=side.revision,
                    isvc=self.isvc or model,
                    window=window,
                    revision_label=self.revision_label,
                )
            )
            for name in ("requests", "errors", "p99_ms")
        }
        stats = RevisionStats(
            side.version, int(round(values["requests"] or 0)), int(round(values["errors"] or 0)), values["p99_ms"]
        )
        return self._store.add(model, side, mark["time"], stats)

    def query(self, promql: str) -> float | None:
        """The value of an instant query with one series (summed when several); None when empty or NaN."""
        url = f"{self.url}/api/v1/query"
        try:
            response = httpx.get(url, params={"query": promql}, timeout=self.timeout, trust_env=False)
            doc = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise KfloopError(f"Prometheus at {self.url} did not answer {promql!r}: {type(e).__name__}: {e}") from e
        if doc.get("status") != "success":
            raise KfloopError(
                f"Prometheus at {self.url} refused {promql!r} (HTTP {response.status_code}): "
                f"{doc.get('errorType')}: {doc.get('error')}"
            )
        values = [float(item["value"][1]) for item in (doc.get("data") or {}).get("result") or []]
        values = [v for v in values if math.isfinite(v)]
        return sum(values) if values else None

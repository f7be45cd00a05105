"""Rollout targets and traffic sources built from one set of options, for every entry point.

``kfloop rollout``, the trigger service's automatic rollouts, the ``deploy`` pipeline component and
the demo each turn their flags into ``RolloutOptions`` (validated when made) and call
``make_target(options)``, and for a canary analysis ``make_source(options, target, store, model)``:

- target ``local``: ``LocalTarget`` on the ``kfloop serve`` gateway at ``gateway_url``;
- target ``kubernetes``: ``KubernetesTarget`` on the InferenceServices in ``namespace`` (default: the
  pod's or the kubeconfig context's), ``image`` replacing the base manifest's when one is created,
  ``standard_canary`` (``auto``, ``on``, ``off``; default ``KFLOOP_STANDARD_CANARY``, else ``auto``)
  for canaries in KServe's Standard mode (``kfloop.rollout.targets.kubernetes``);
- source: ``PrometheusSource`` when ``prometheus_url`` is given (``prometheus_queries``: the query
  set, one of ``QUERY_SETS``: ``knative``, Knative 1.19+'s OpenTelemetry names, the default;
  ``knative-legacy``, the names before 1.19; ``kfloop``, the kfloop predictor's own metrics; see
  ``kfloop.rollout.sources``; a service in Standard mode is analysed with ``kfloop`` only, by its
  pods' ``app`` label), else ``LocalStatsSource`` on the gateway, which a ``kubernetes`` target does
  not have.

Error messages name the options as the caller's users spell them (``OptionNames``: a flag, an
environment variable, a pipeline parameter). The targets and sources are imported only when one
is built, so making options stays cheap (no HTTP or Kubernetes client).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

from kfloop.errors import ConfigError
from kfloop.names import DEFAULT_GATEWAY

TARGET_KINDS = ("local", "kubernetes")
QUERY_SETS = ("knative", "knative-legacy", "kfloop")  # kfloop.rollout.sources.FLAVORS, without importing httpx
STANDARD_CANARY = ("auto", "on", "off")  # kfloop.rollout.targets.kubernetes.STANDARD_CANARY_CHOICES
DEFAULT_NAMESPACE = "default"


@dataclasses.dataclass(frozen=True)
class OptionNames:
    """How an entry point's users spell the options, for error messages.

    ``target_env`` is the environment variable the target kind falls back to when the flag is not
    given; a bad kind is reported under that name, since the flag itself only offers valid choices.
    ``unknown_target`` is that message (placeholders ``{name}``, ``{kind}``, ``{kinds}``)."""

    target: str = "target"
    target_env: str | None = None
    gateway_url: str = "gateway_url"
    prometheus_url: str = "prometheus_url"
    prometheus_queries: str = "prometheus_queries"
    standard_canary: str = "KFLOOP_STANDARD_CANARY"
    unknown_target: str = "{name}={kind!r} is not a rollout target; expected one of {kinds}"


@dataclasses.dataclass(frozen=True)
class RolloutOptions:
    """Where a rollout moves traffic (``target``: local or kubernetes) and where its analysis reads
    the revisions' traffic; refused with a ``ConfigError`` when made with a value kfloop cannot use.

    ``gateway_timeout`` bounds each call to the gateway's admin API (a deploy waits until the new
    revision's processes are ready); ``stats_timeout`` each read of its counters or of Prometheus."""

    target: str = "local"
    gateway_url: str = DEFAULT_GATEWAY
    namespace: str | None = None
    image: str | None = None
    prometheus_url: str | None = None
    prometheus_queries: str = "knative"
    gateway_timeout: float = 300.0
    stats_timeout: float = 10.0
    gateway_token_file: Path | None = None  # the control token for the gateway's admin API (kfloop.auth)
    standard_canary: str | None = None  # None: KFLOOP_STANDARD_CANARY (Settings), else auto
    names: OptionNames = OptionNames()

    def __post_init__(self) -> None:
        names = self.names
        if self.target not in TARGET_KINDS:
            name = names.target_env or names.target
            raise ConfigError(names.unknown_target.format(name=name, kind=self.target, kinds=TARGET_KINDS))
        if self.target == "local":  # a cluster's rollout has no gateway
            _check_url(names.gateway_url, self.gateway_url)
        if self.prometheus_url:  # "" (an empty env var) means none
            _check_url(names.prometheus_url, self.prometheus_url)
        if self.prometheus_queries not in QUERY_SETS:
            raise ConfigError(
                f"{names.prometheus_queries} {self.prometheus_queries!r} is not a Prometheus query set; "
                f"expected one of {', '.join(QUERY_SETS)}"
            )
        if self.standard_canary is not None and self.standard_canary not in STANDARD_CANARY:
            raise ConfigError(
                f"{names.standard_canary} {self.standard_canary!r}: expected one of {', '.join(STANDARD_CANARY)}"
            )
        for name in ("gateway_timeout", "stats_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"rollout option {name}={getattr(self, name)!r}: expected a positive number of seconds"
                )

    def check_source(self) -> None:
        """Refuse options a canary analysis cannot read traffic with: a cluster has no gateway
        counters, only Prometheus."""
        if not self.prometheus_url and self.target != "local":
            raise ConfigError(
                f"{self.names.target} {self.target} needs {self.names.prometheus_url} to read the revisions' traffic"
            )


def make_target(options: RolloutOptions):
    """The ``RolloutTarget`` the options name."""
    if options.target == "local":
        from kfloop.rollout.targets.local import LocalTarget

        return LocalTarget(options.gateway_url, timeout=options.gateway_timeout, token_file=options.gateway_token_file)
    try:
        from kfloop.rollout.targets.kubernetes import KubernetesTarget
    except ModuleNotFoundError as e:
        if e.name != "kfloop.rollout.targets.kubernetes":
            raise
        flag = options.names.target
        raise ConfigError(
            f"{flag} kubernetes needs kfloop/rollout/targets/kubernetes.py (KubernetesTarget), which this "
            f"installation does not have yet; use {flag} local"
        ) from None
    standard_canary = options.standard_canary
    if standard_canary is None:
        from kfloop.config import Settings

        standard_canary = Settings.from_env().standard_canary
        if standard_canary not in STANDARD_CANARY:
            raise ConfigError(
                f"KFLOOP_STANDARD_CANARY={standard_canary!r}: expected one of {', '.join(STANDARD_CANARY)}"
            )
    return KubernetesTarget(namespace=options.namespace, image=options.image, standard_canary=standard_canary)


def make_source(options: RolloutOptions, target, store, model: str):
    """Where an analysis of ``model`` on ``target`` reads each revision's traffic: Prometheus when
    ``prometheus_url`` is given, else the gateway; predictions and quality from ``store``.

    Prometheus is queried in the target's namespace (a local target's: ``namespace``, else the
    pod's, else ``default``), for the target's InferenceService of the model."""
    options.check_source()
    from kfloop.rollout.sources import LocalStatsSource, PrometheusSource

    if options.prometheus_url:
        # a service in KServe's Standard mode has no Knative revisions: its pods' label instead
        label = target.revision_label(model, options.prometheus_queries) if hasattr(target, "revision_label") else None
        return PrometheusSource(
            options.prometheus_url,
            getattr(target, "namespace", None) or options.namespace or pod_namespace(),
            getattr(target, "isvc_name", None) or model,
            store,
            flavor=options.prometheus_queries,
            timeout=options.stats_timeout,
            **({"revision_label": label} if label else {}),
        )
    return LocalStatsSource(
        options.gateway_url, store, timeout=options.stats_timeout, token_file=options.gateway_token_file
    )


def pod_namespace() -> str:
    """The namespace of the pod this runs in (its ServiceAccount's), else ``default``."""
    from kfloop.rollout.targets.kubernetes import SA_NAMESPACE_FILE

    return SA_NAMESPACE_FILE.read_text().strip() if SA_NAMESPACE_FILE.is_file() else DEFAULT_NAMESPACE


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} {url!r}: expected an http:// or https:// URL")

"""Typed settings, read from the environment in one place.

Entry points (CLI, components, servers) call ``Settings.from_env()`` once, apply their
flags with ``settings.replace(...)`` and pass the result down. Nothing else reads the
environment. Each setting is read from ``KFLOOP_<NAME>``, except the few that the platform sets
under names of its own (Knative's ``K_SINK`` and ``K_CE_OVERRIDES``, KFP's
``KF_PIPELINES_SA_TOKEN_PATH``, the Kubernetes client's ``KUBECONFIG``), which say so in their
field's ``env``. ``tests/test_environment_reads.py`` checks that no other module reads a variable.

A leaf: imports nothing from kfloop but ``kfloop.names`` and ``kfloop.errors``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from kfloop.errors import ConfigError
from kfloop.names import CONTROL_TOKEN_FILE, DEFAULT_GATEWAY

ENV_PREFIX = "KFLOOP_"
DEFAULT_IMAGE = "ghcr.io/kfloop/kfloop:0.1.0"


def _platform(env: str) -> dataclasses.Field:
    """A setting the platform sets under its own variable name ``env``."""
    return dataclasses.field(default=None, metadata={"env": env})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where kfloop keeps its state, how it reaches object storage and the services of the loop.

    ``home`` is the local folder used by default. When ``s3_endpoint`` is set the registry,
    captures and events live in the bucket ``s3_bucket`` on that S3/MinIO endpoint instead.
    """

    home: Path = Path(".kfloop")
    s3_endpoint: str | None = None
    s3_access_key: str | None = dataclasses.field(default=None, repr=False)
    s3_secret_key: str | None = dataclasses.field(default=None, repr=False)
    s3_bucket: str = "kfloop"
    s3_secure: bool = False
    s3_region: str | None = None
    image: str = DEFAULT_IMAGE
    log_level: str = "INFO"
    # the services of the loop
    kfp_host: str | None = None  # a Kubeflow Pipelines API, for runs on a cluster
    gateway_url: str = DEFAULT_GATEWAY  # kfloop serve's gateway, for rollouts on this machine
    prometheus_url: str | None = None  # where a canary analysis on a cluster reads its metrics
    rollout_target: str = "local"  # where kfloop rollout drives revisions: local or kubernetes
    standard_canary: str = "auto"  # canaries in KServe Standard mode: auto (checked), on, off
    trigger_runner_cmd: str | None = None  # the trigger's local retraining command (default kfloop pipeline run)
    # the trigger's per-signal policy file (kfloop.retraining.policy.load_rules): alert or retrain, windows, thresholds
    policy_file: Path | None = None
    # the control plane's bearer token file (default <home>/control-token; on a cluster, a mounted Secret)
    control_token_file: Path | None = None
    # the trigger's OIDC sender authentication (kfloop.oidc; on a cluster whose Knative has authentication-oidc):
    # events on its CloudEvents routes need a token of this issuer for this audience, from one of the subjects
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None  # default: the issuer's discovery document's jwks_uri
    oidc_subjects: str | None = None  # comma-separated ``system:serviceaccount:NS:NAME``; none: any subject
    oidc_jwks_ca_file: Path | None = None  # CA bundle for the JWKS URL (in a pod: the service account's ca.crt)
    oidc_jwks_token_file: Path | None = None  # bearer token for the JWKS URL (in a pod: its service account token)
    # set by the platform
    sink_url: str | None = _platform("K_SINK")  # Knative SinkBinding: where emitted events go
    ce_overrides: str | None = _platform("K_CE_OVERRIDES")  # Knative SinkBinding: extensions to add
    kfp_token_path: str | None = _platform("KF_PIPELINES_SA_TOKEN_PATH")  # KFP's projected token
    kubeconfig: str | None = _platform("KUBECONFIG")  # outside a cluster: the Kubernetes client's config

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            name = env_name(field)
            raw = env.get(name)
            if raw is not None and raw != "":
                values[field.name] = _parse(name, field.type, raw)
        return cls(**values)

    def replace(self, **changes: object) -> Settings:
        """A copy with the given fields changed; ``None`` values are ignored (flag not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def control_token_path(self) -> Path:
        """Where the control plane's bearer token is (``kfloop.auth``): ``control_token_file``, else
        ``<home>/control-token``."""
        return Path(self.control_token_file or Path(self.home) / CONTROL_TOKEN_FILE).resolve()

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_endpoint)

    def storage_env(self) -> dict[str, str]:
        """The ``KFLOOP_*`` variables that point a child process at the same storage."""
        out = {"KFLOOP_HOME": str(Path(self.home).resolve())}
        if self.control_token_file:
            out["KFLOOP_CONTROL_TOKEN_FILE"] = str(self.control_token_path)
        if self.uses_s3:
            out.update(
                KFLOOP_S3_ENDPOINT=self.s3_endpoint or "",
                KFLOOP_S3_BUCKET=self.s3_bucket,
                KFLOOP_S3_SECURE=str(self.s3_secure).lower(),
                KFLOOP_S3_ACCESS_KEY=self.s3_access_key or "",
                KFLOOP_S3_SECRET_KEY=self.s3_secret_key or "",
            )
            if self.s3_region:
                out["KFLOOP_S3_REGION"] = self.s3_region
        return out


def env_name(field: dataclasses.Field | str) -> str:
    """The environment variable a setting (a field of ``Settings``, or its name) is read from."""
    if isinstance(field, str):
        field = next(f for f in dataclasses.fields(Settings) if f.name == field)
    return field.metadata.get("env") or ENV_PREFIX + field.name.upper()


def _parse(name: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    if "bool" in kind:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")
    if "Path" in kind:
        return Path(raw)
    return raw

"""Typed settings, read from ``KFLOOP_*`` environment variables in one place.

Entry points (CLI, components, servers) call ``Settings.from_env()`` once, apply their
flags with ``settings.replace(...)`` and pass the result down. Nothing else reads the
environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from kfloop.errors import ConfigError

ENV_PREFIX = "KFLOOP_"
DEFAULT_IMAGE = "ghcr.io/kfloop/kfloop:0.1.0"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where kfloop keeps its state and how it reaches object storage.

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, field.type, raw)
        return cls(**values)

    def replace(self, **changes: object) -> Settings:
        """A copy with the given fields changed; ``None`` values are ignored (flag not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_endpoint)

    def storage_env(self) -> dict[str, str]:
        """The ``KFLOOP_*`` variables that point a child process at the same storage."""
        out = {"KFLOOP_HOME": str(Path(self.home).resolve())}
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


def _parse(name: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    if "bool" in kind:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected true or false")
    if "Path" in kind:
        return Path(raw)
    return raw

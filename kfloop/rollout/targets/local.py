"""``LocalTarget``: the rollout target of ``kfloop serve``, driven through its gateway's admin API.

The gateway (``kfloop.serving.local.gateway``) runs each revision as processes on 127.0.0.1 and splits
traffic between them; this class only speaks HTTP to ``<gateway>/kfloop/v1/models/...``, so
``kfloop.rollout.actions`` can keep the registry's stages in step with what the gateway did. The admin
API wants the control token (``kfloop.auth``): it is read from ``token_file`` (``kfloop serve`` writes
it at ``<KFLOOP_HOME>/control-token``) on each call.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from kfloop.auth import TokenFile
from kfloop.errors import ConfigError, KfloopError, ModelNotFound, RegistryError
from kfloop.names import ADMIN_MODELS_PATH, DEFAULT_GATEWAY
from kfloop.store.registry import VersionRecord


class LocalTarget:
    """Revisions served by the ``kfloop serve`` gateway at ``gateway_url``.

    Deploys wait until the new revision's processes are ready, hence the long ``timeout``."""

    name = "local"

    def __init__(self, gateway_url: str = DEFAULT_GATEWAY, timeout: float = 300.0, token_file: Path | None = None):
        self.gateway_url = gateway_url.rstrip("/")
        self.timeout = timeout
        self.token = TokenFile(token_file)

    def deploy(self, record: VersionRecord, canary_percent: int | None) -> dict:
        return self._call(
            "POST", f"{record.name}/deploy", {"version": record.version, "canary_percent": canary_percent}
        )

    def promote(self, model: str) -> dict:
        return self._call("POST", f"{model}/promote")

    def rollback(self, model: str) -> dict:
        return self._call("POST", f"{model}/rollback")

    def shadow(self, model: str, version: int | None, percent: int, record: VersionRecord | None = None) -> dict:
        """Mirror ``percent`` of the predictions to ``version`` (None or 0% stops mirroring); the gateway
        finds the version's bundle itself (``record`` is for targets that need it)."""
        return self._call("POST", f"{model}/shadow", {"version": version, "percent": percent})

    def status(self, model: str) -> dict:
        """The gateway's status of ``model``; a model the gateway does not serve has no revisions."""
        try:
            return self._call("GET", model)
        except ModelNotFound:
            return {
                "model": model,
                "target": self.name,
                "stable": None,
                "canary": None,
                "shadow": None,
                "ready": False,
                "served": False,
            }

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        url = f"{self.gateway_url}{ADMIN_MODELS_PATH}/{path}"
        try:
            response = httpx.request(
                method, url, json=body, headers=self.token.headers(), timeout=self.timeout, trust_env=False
            )
        except httpx.ConnectError:
            raise KfloopError(f"no kfloop serve at {self.gateway_url}; start it with `kfloop serve`") from None
        except httpx.HTTPError as e:
            raise KfloopError(f"{method} {url} failed: {type(e).__name__}: {e}") from e
        try:
            doc = response.json()
        except ValueError:
            raise KfloopError(
                f"{url} answered HTTP {response.status_code} {response.text[:200]!r}, not JSON; "
                f"is {self.gateway_url} a kfloop serve gateway?"
            ) from None
        if response.status_code == 200:
            return doc
        message = doc.get("error", doc) if isinstance(doc, dict) else doc
        if response.status_code in (401, 403):
            raise ConfigError(
                f"{self.gateway_url} refused the control token from {self.token.describe()}: {message} "
                f"(is this the KFLOOP_HOME of that kfloop serve?)"
            )
        error = {404: ModelNotFound, 409: RegistryError, 400: ConfigError}.get(response.status_code, KfloopError)
        raise error(f"{self.gateway_url}: {message}")

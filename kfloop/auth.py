"""The control plane's bearer token: made, stored, read and checked here, and nowhere else.

``kfloop serve`` makes a new random token at each start (``write_token``: 256 bits, a file of mode 0600
written atomically at ``Settings.control_token_path``, by default ``<KFLOOP_HOME>/control-token``);
the CLI (``kfloop rollout``), the demo and the trigger read it (``read_token``) and send it as
``Authorization: Bearer <token>`` (``bearer``). Servers compare it in constant time (``token_matches``).
The gateway also signs the ``x-kfloop-revision`` header it sets with the token (``sign``), so a
transformer trusts that header only from the gateway (``signature_matches``).

A leaf: imports nothing from kfloop but ``kfloop.names`` and ``kfloop.errors``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from kfloop.errors import ConfigError
from kfloop.names import AUTHORIZATION_HEADER

TOKEN_BYTES = 32
FILE_MODE = 0o600


def generate_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token(path: Path, token: str | None = None) -> str:
    """Write ``token`` (a new one by default) to ``path``, readable by its owner only; returns it."""
    token = token or generate_token()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


def read_token(path: Path) -> str | None:
    """The token in ``path``, or None when there is no such file; ``ConfigError`` when it is empty or unreadable."""
    try:
        token = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read the control token {path}: {e.strerror}") from e
    if not token:
        raise ConfigError(f"the control token file {path} is empty; restart kfloop serve to write a new one")
    return token


def ensure_token(path: Path) -> str:
    """The token in ``path``, written first when there is none."""
    return read_token(path) or write_token(path)


def bearer(token: str | None) -> dict[str, str]:
    """The request header carrying ``token`` (none without a token)."""
    return {AUTHORIZATION_HEADER: f"Bearer {token}"} if token else {}


def token_matches(authorization: str | None, token: str) -> bool:
    """True when an ``Authorization`` header value is ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode())


def sign(token: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` with ``token``, hex."""
    return hmac.new(token.encode(), value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def signature_matches(token: str | None, value: str | None, signature: str | None) -> bool:
    if not (token and value and signature):
        return False
    return hmac.compare_digest(sign(token, value).encode(), signature.encode("utf-8", "replace"))


class TokenFile:
    """A client's view of the token file at ``path`` (None: send no token): read on each call, so a
    client that outlives one ``kfloop serve`` sends the token of the one running now."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header, or none when there is no readable token (the server then says 401)."""
        try:
            return bearer(read_token(self.path)) if self.path else {}
        except ConfigError:
            return {}

    def describe(self) -> str:
        return str(self.path) if self.path else "no token file"

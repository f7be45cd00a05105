"""OIDC sender authentication: verify the bearer token a Knative broker sends with each event.

With Knative Eventing's ``authentication-oidc`` feature on (Eventing 1.14+), the broker's filter
requests a token for each Trigger's own OIDC service account (the Trigger's
``status.auth.serviceAccountName``: ``<trigger>-oidc-eventing.knative.dev-trigger``) with the
subscriber's audience (the Trigger's ``spec.subscriber.audience``, as the trigger's Service is no
Addressable) and sends it as ``Authorization: Bearer <JWT>``. The token is a Kubernetes service account
token: RS256, signed by the cluster's service account issuer, whose keys the API server publishes as a
JWKS (``/openid/v1/jwks``; the discovery document is ``<issuer>/.well-known/openid-configuration``).

``OidcVerifier.verify`` checks, in this order: a three-part compact JWS of at most ``MAX_TOKEN_BYTES``,
``alg`` RS256 (nothing else: no ``none``, no HMAC), the signature with the JWKS key named by ``kid``
(the JWKS is fetched again, at most every ``refetch_seconds``, when a ``kid`` is unknown: key
rotation), ``iss`` equal to the issuer, the audience in ``aud``, ``exp`` not past and ``nbf`` / ``iat``
not ahead (``leeway_seconds`` of clock skew), and, when ``subjects`` are given, ``sub`` one of them
(``system:serviceaccount:<namespace>:<name>``: any pod can have a token with any audience for its own
service account, so the subject is what names the broker's Trigger). Any failure is ``Unauthorized``
naming the reason.

RSA needs the ``cryptography`` package; ``require_crypto`` says so (``ConfigError``) when it is not
installed, so a service configured for OIDC refuses to start without it. A leaf: imports nothing from
kfloop but ``kfloop.errors``; the JWKS is read with ``fetch`` (by default an HTTPS GET with httpx).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kfloop.errors import ConfigError, KfloopError

MAX_TOKEN_BYTES = 8192  # a Kubernetes service account token is about 1 KB
DEFAULT_LEEWAY_SECONDS = 30.0
DEFAULT_REFETCH_SECONDS = 30.0  # at most one JWKS fetch per this many seconds for an unknown kid
ALGORITHM = "RS256"


class Unauthorized(KfloopError):
    """The request carries no valid OIDC token (HTTP 401)."""


def require_crypto() -> None:
    """``ConfigError`` unless the ``cryptography`` package can be imported."""
    try:
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"OIDC token verification needs the 'cryptography' package ({e}): pip install cryptography, "
            "or start without --oidc_issuer"
        ) from None


def http_fetcher(ca_file: str | Path | None = None, token_file: str | Path | None = None) -> Callable[[str], bytes]:
    """A ``fetch(url) -> bytes`` for the JWKS: HTTPS verified against ``ca_file`` (default: the system's
    CAs), with ``Authorization: Bearer`` the token in ``token_file`` when given (the pod's own service
    account token: the API server serves its JWKS to service accounts)."""

    def fetch(url: str) -> bytes:
        import httpx

        headers = {"accept": "application/json"}
        if token_file:
            headers["authorization"] = f"Bearer {Path(token_file).read_text().strip()}"
        response = httpx.get(url, headers=headers, timeout=10.0, verify=str(ca_file) if ca_file else True)
        response.raise_for_status()
        return response.content

    return fetch


class OidcVerifier:
    """Verifies RS256 bearer tokens of ``issuer`` for ``audience`` (and one of ``subjects``, if any)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_url: str | None = None,
        subjects: Iterable[str] = (),
        fetch: Callable[[str], bytes] | None = None,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        refetch_seconds: float = DEFAULT_REFETCH_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        if not issuer or not audience:
            raise ConfigError(
                "OIDC verification needs both an issuer (--oidc_issuer) and an audience (--oidc_audience)"
            )
        require_crypto()
        self.issuer, self.audience = issuer, audience
        self.jwks_url = jwks_url or None
        self.subjects = frozenset(s.strip() for s in subjects if s.strip())
        self.fetch = fetch or http_fetcher()
        self.leeway, self.refetch_seconds, self.clock = leeway_seconds, refetch_seconds, clock
        self._keys: dict[str, object] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        subjects = ", ".join(sorted(self.subjects)) or "any subject"
        return f"OIDC tokens of {self.issuer} for audience {self.audience!r} ({subjects})"

    # -- keys --------------------------------------------------------------------------------------

    def _jwks_location(self) -> str:
        if self.jwks_url:
            return self.jwks_url
        discovery = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = _json(self.fetch(discovery), "the OIDC discovery document")
        if not isinstance(doc.get("jwks_uri"), str):
            raise Unauthorized(f"the OIDC discovery document at {discovery} has no jwks_uri")
        self.jwks_url = doc["jwks_uri"]
        return self.jwks_url

    def refresh(self) -> None:
        """Fetch the JWKS now (at start, and again for an unknown ``kid``)."""
        location = self._jwks_location()
        doc = _json(self.fetch(location), f"the JWKS at {location}")
        keys = {}
        for jwk in doc.get("keys") or []:
            if isinstance(jwk, dict) and jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig":
                try:
                    keys[str(jwk.get("kid", ""))] = _rsa_key(jwk)
                except (ValueError, TypeError, KeyError):
                    continue  # a key kfloop cannot use; the others still count
        self._keys, self._fetched_at = keys, self.clock()

    def _key(self, kid: str) -> object:
        with self._lock:
            if kid not in self._keys:
                stale = self._fetched_at is None or self.clock() - self._fetched_at >= self.refetch_seconds
                if stale:
                    try:
                        self.refresh()
                    except Unauthorized:
                        raise
                    except Exception as e:  # noqa: BLE001 - the issuer may be down: the token cannot be checked
                        raise Unauthorized(f"cannot read the issuer's keys: {e.__class__.__name__}: {e}") from None
            key = self._keys.get(kid)
            if key is None and kid == "" and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
        if key is None:
            raise Unauthorized(f"the token's signing key {kid!r} is not one of the issuer's keys")
        return key

    # -- tokens ------------------------------------------------------------------------------------

    def verify_header(self, authorization: str | None) -> dict:
        """The claims of the ``Authorization: Bearer <JWT>`` header value; ``Unauthorized`` otherwise."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this route wants an OIDC token (Authorization: Bearer <JWT>) from the Knative broker")
        return self.verify(token.strip())

    def verify(self, token: str) -> dict:
        """The claims of ``token`` once every check in the module doc passed; ``Unauthorized`` otherwise."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized(f"the bearer token is {len(token)} bytes long: at most {MAX_TOKEN_BYTES}")
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthorized("the bearer token is not a JWT (three base64url parts separated by '.')")
        header = _json(_b64(parts[0]), "the token header")
        if header.get("alg") != ALGORITHM:
            raise Unauthorized(f"the token is signed with {header.get('alg')!r}: only {ALGORITHM} is accepted")
        key = self._key(str(header.get("kid", "")))
        try:
            key.verify(_b64(parts[2]), f"{parts[0]}.{parts[1]}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, UnicodeEncodeError):
            raise Unauthorized("the token's signature does not verify with the issuer's key") from None
        claims = _json(_b64(parts[1]), "the token claims")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict) -> None:
        if claims.get("iss") != self.issuer:
            raise Unauthorized(f"the token was issued by {claims.get('iss')!r}, not {self.issuer!r}")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise Unauthorized(f"the token is for audience {claims.get('aud')!r}, not {self.audience!r}")
        now = self.clock()
        exp = claims.get("exp")
        if not _number(exp):
            raise Unauthorized("the token has no expiry (exp)")
        if now > exp + self.leeway:
            raise Unauthorized(f"the token expired {now - exp:.0f} s ago")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not _number(value) or value > now + self.leeway):
                raise Unauthorized(f"the token is not valid yet ({name} {value!r})")
        if self.subjects and claims.get("sub") not in self.subjects:
            raise Unauthorized(f"the token's subject {claims.get('sub')!r} is not one of the accepted senders")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("the bearer token is not base64url") from None


def _json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise Unauthorized(f"{what} is not a JSON object")
    return doc


def _rsa_key(jwk: dict):
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    n = int.from_bytes(_b64(jwk["n"]), "big")
    e = int.from_bytes(_b64(jwk["e"]), "big")
    if n.bit_length() < 2048:
        raise ValueError("RSA keys under 2048 bits are refused")
    return RSAPublicNumbers(e, n).public_key()

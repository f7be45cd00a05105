"""An OIDC issuer on 127.0.0.1, as a Kubernetes API server is one for service account tokens: an RSA key
made here, its JWKS at ``/openid/v1/jwks`` and the discovery document at
``/.well-known/openid-configuration``; ``token`` signs RS256 JWTs with the claims a Knative broker's
token carries (``rotate`` makes a new key and publishes it instead of the old one)."""

from __future__ import annotations

import base64
import json
import time
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.loopback_http import LoopbackServer, QuietHandler, send_json

SUBJECT = "system:serviceaccount:kfloop:kfloop-drift-oidc-eventing.knative.dev-trigger"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_key() -> tuple[rsa.RSAPrivateKey, str]:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), uuid.uuid4().hex[:16]


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64url(n), "e": b64url(b"\x01\x00\x01")}


def sign(key: rsa.RSAPrivateKey, header: dict, claims: dict) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


class OidcIssuer:
    """The issuer's HTTP server; ``url`` is its issuer URL, ``fetches`` counts JWKS reads."""

    def __init__(self):
        self.key, self.kid = new_key()
        self.fetches = 0
        issuer = self

        class Handler(QuietHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    doc = {"issuer": issuer.url, "jwks_uri": issuer.url + "/openid/v1/jwks"}
                elif self.path == "/openid/v1/jwks":
                    issuer.fetches += 1
                    doc = {"keys": [jwk(issuer.key, issuer.kid)]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                send_json(self, 200, doc)

        self._http = LoopbackServer(Handler, poll_interval=0.05)
        self.url = self._http.url

    def claims(self, audience: str, **overrides) -> dict:
        now = int(time.time())
        claims = {"iss": self.url, "aud": [audience], "sub": SUBJECT, "iat": now, "nbf": now, "exp": now + 600}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, audience: str, key: rsa.RSAPrivateKey | None = None, header: dict | None = None, **claims) -> str:
        """An RS256 token for ``audience`` (claims overridden by ``claims``; None drops one)."""
        header = header or {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        return sign(key or self.key, header, self.claims(audience, **claims))

    def rotate(self) -> None:
        self.key, self.kid = new_key()

    def close(self) -> None:
        self._http.close()

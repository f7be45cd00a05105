"""kfloop.oidc against a real issuer on 127.0.0.1 (tests/fakes/oidc_issuer.py): a Knative broker's token
passes; every forgery, wrong claim and malformed token is Unauthorized naming why; key rotation refetches
the JWKS, at most once per refetch period."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from kfloop.errors import ConfigError
from kfloop.oidc import OidcVerifier, Unauthorized
from tests.fakes.oidc_issuer import SUBJECT, OidcIssuer, b64url, new_key, sign

AUDIENCE = "kfloop-trigger"


@pytest.fixture
def issuer():
    server = OidcIssuer()
    yield server
    server.close()


def verifier(issuer: OidcIssuer, **options) -> OidcVerifier:
    return OidcVerifier(issuer.url, AUDIENCE, subjects=[SUBJECT], **options)


def test_a_brokers_token_passes_and_the_keys_come_from_the_discovery_document(issuer):
    v = verifier(issuer)
    claims = v.verify_header(f"Bearer {issuer.token(AUDIENCE)}")
    assert claims["sub"] == SUBJECT and v.jwks_url == issuer.url + "/openid/v1/jwks"
    assert v.verify(issuer.token(AUDIENCE, aud=AUDIENCE))["aud"] == AUDIENCE  # aud as a plain string
    assert issuer.fetches == 1  # the keys are kept


def test_every_bad_token_is_refused_naming_why(issuer):
    v = verifier(issuer)
    other, _ = new_key()
    header = {"alg": "RS256", "kid": issuer.kid}
    public_pem = issuer.key.public_key().public_numbers().n.to_bytes(256, "big")
    claims = b64url(json.dumps(issuer.claims(AUDIENCE)).encode())
    unsigned = f"{b64url(json.dumps({'alg': 'none'}).encode())}.{claims}."
    hs_input = f"{b64url(json.dumps({'alg': 'HS256', 'kid': issuer.kid}).encode())}.{claims}"
    hs256 = f"{hs_input}.{b64url(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())}"
    good = issuer.token(AUDIENCE)
    head, body, sig = good.split(".")
    tampered_claims = dict(issuer.claims(AUDIENCE), sub="system:serviceaccount:evil:pod")
    tampered = f"{head}.{b64url(json.dumps(tampered_claims).encode())}.{sig}"
    cases = {
        "no header": (None, "wants an OIDC token"),
        "basic auth": ("Basic " + base64.b64encode(b"a:b").decode(), "wants an OIDC token"),
        "not a JWT": ("Bearer abc.def", "not a JWT"),
        "not base64": ("Bearer !!.!!.!!", "not base64url"),
        "alg none": ("Bearer " + unsigned, "only RS256"),
        "HS256 with the public key": ("Bearer " + hs256, "only RS256"),
        "another key": ("Bearer " + issuer.token(AUDIENCE, key=other), "signature does not verify"),
        "tampered claims": ("Bearer " + tampered, "signature does not verify"),
        "unknown kid": ("Bearer " + sign(other, {**header, "kid": "other"}, issuer.claims(AUDIENCE)), "not one of"),
        "wrong audience": ("Bearer " + issuer.token("someone-else"), "audience"),
        "no audience": ("Bearer " + issuer.token(AUDIENCE, aud=None), "audience"),
        "wrong issuer": ("Bearer " + issuer.token(AUDIENCE, iss="https://evil.example"), "issued by"),
        "expired": ("Bearer " + issuer.token(AUDIENCE, exp=1_000_000_000), "expired"),
        "no expiry": ("Bearer " + issuer.token(AUDIENCE, exp=None), "no expiry"),
        "not yet valid": ("Bearer " + issuer.token(AUDIENCE, nbf=4_000_000_000), "not valid yet"),
        "another sender": ("Bearer " + issuer.token(AUDIENCE, sub="system:serviceaccount:x:y"), "subject"),
        "huge": ("Bearer " + "a" * 9000, "at most 8192"),
    }
    for kind, (header_value, reason) in cases.items():
        with pytest.raises(Unauthorized, match=reason):
            v.verify_header(header_value)
            pytest.fail(f"{kind} was accepted")
    assert v.verify_header(f"Bearer {good}")["sub"] == SUBJECT  # still fine after all that


def test_a_rotated_key_is_fetched_once_per_refetch_period(issuer):
    now = [1_000.0]
    v = verifier(issuer, refetch_seconds=30, clock=lambda: now[0])
    v.refresh()
    issuer.rotate()
    now[0] += 31
    rotated = issuer.token(AUDIENCE, iat=None, nbf=None, exp=10_000)
    assert v.verify(rotated)["sub"] == SUBJECT and issuer.fetches == 2  # unknown kid: fetched again
    forged = sign(new_key()[0], {"alg": "RS256", "kid": "made-up"}, issuer.claims(AUDIENCE, exp=10_000))
    for _ in range(5):
        with pytest.raises(Unauthorized, match="not one of"):
            v.verify(forged)
    assert issuer.fetches == 2  # a made-up kid right after a fetch fetches nothing: no fetch storm
    now[0] += 31
    with pytest.raises(Unauthorized, match="not one of"):
        v.verify(forged)
    assert issuer.fetches == 3  # once per refetch period


def test_a_verifier_needs_an_issuer_and_an_audience_and_an_issuer_that_answers(issuer):
    with pytest.raises(ConfigError, match="issuer"):
        OidcVerifier("", AUDIENCE)
    with pytest.raises(ConfigError, match="audience"):
        OidcVerifier(issuer.url, "")
    down = OidcVerifier("http://127.0.0.1:9", AUDIENCE)
    with pytest.raises(Unauthorized, match="cannot read the issuer's keys"):
        down.verify(issuer.token(AUDIENCE))

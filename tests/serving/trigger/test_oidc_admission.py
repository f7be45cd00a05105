"""The trigger's OIDC sender authentication as a real process: with --oidc_issuer and --oidc_audience its
CloudEvents routes take only events carrying a Knative broker's token (RS256, verified against the
issuer's JWKS served on 127.0.0.1 by tests/fakes/oidc_issuer.py), the feedback and status routes keep
the control token, and a trigger that cannot verify tokens refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from kfloop.events.cloudevents import to_structured
from kfloop.names import DECISION_HEADER
from kfloop.store.objects import LocalStore
from tests.fakes.event_sink import EventSink
from tests.fakes.oidc_issuer import SUBJECT, OidcIssuer, new_key, sign
from tests.serving.trigger_process import Trigger, drift, kill_fake_runs

pytestmark = pytest.mark.processes  # starts the trigger service on 127.0.0.1

AUDIENCE = "kfloop-trigger"


@pytest.fixture(scope="module")
def issuer():
    server = OidcIssuer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def trigger(tmp_path_factory, issuer):
    sink = EventSink()
    flags = ["--consecutive_windows", "2", "--oidc_issuer", issuer.url, "--oidc_audience", AUDIENCE]
    process = Trigger(tmp_path_factory.mktemp("oidc"), sink, *flags, "--oidc_subjects", f"{SUBJECT},other:sa")
    yield process
    code = process.stop()
    kill_fake_runs(process.home)
    sink.close()
    assert code == 0, process.output()


def post(trigger: Trigger, event: dict, authorization: str | None, path: str = "/") -> httpx.Response:
    headers, body = to_structured(event)
    if authorization:
        headers["authorization"] = authorization
    return httpx.post(trigger.url + path, content=body, headers=headers, timeout=30)


def test_only_events_with_the_brokers_token_are_taken(trigger, issuer):
    store = LocalStore(trigger.home)
    before = store.list("")
    bad = {
        "no token": None,
        "control token": trigger.auth["authorization"],
        "wrong audience": "Bearer " + issuer.token("kfloop-gateway"),
        "another sender": "Bearer " + issuer.token(AUDIENCE, sub="system:serviceaccount:default:curl"),
        "expired": "Bearer " + issuer.token(AUDIENCE, exp=1_000_000_000),
        "forged": "Bearer " + sign(new_key()[0], {"alg": "RS256", "kid": issuer.kid}, issuer.claims(AUDIENCE)),
        "unsigned": "Bearer " + issuer.token(AUDIENCE).rsplit(".", 1)[0] + ".",
    }
    for kind, authorization in bad.items():
        for path in ("/", "/v1/dead-letters"):
            answer = post(trigger, drift(0), authorization, path)
            assert answer.status_code == 401, (kind, path, answer.text)
            assert answer.json()["error"] and answer.headers["www-authenticate"].startswith("Bearer"), kind
    assert store.list("") == before  # nothing kept from any of them
    good = post(trigger, drift(0), "Bearer " + issuer.token(AUDIENCE))
    assert good.status_code == 202 and good.headers[DECISION_HEADER] == "waiting"
    assert post(trigger, drift(1), "Bearer " + issuer.token(AUDIENCE, sub="other:sa")).headers[DECISION_HEADER] == (
        "start"
    )
    dead = post(trigger, drift(7), "Bearer " + issuer.token(AUDIENCE), "/v1/dead-letters")
    assert dead.status_code == 202 and store.list("dead-letters/")


def test_the_feedback_and_status_routes_keep_the_control_token(trigger, issuer):
    oidc = {"authorization": "Bearer " + issuer.token(AUDIENCE)}
    body = {"model": "churn", "labels": [{"request_id": "x:0", "label": 1}]}
    assert httpx.post(trigger.url + "/v1/feedback", json=body, headers=oidc).status_code == 401
    assert httpx.get(trigger.url + "/v1/status", headers=oidc).status_code == 401
    assert httpx.get(trigger.url + "/v1/status", headers=trigger.auth).status_code == 200
    assert httpx.get(trigger.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    "case",
    ["no audience", "no cryptography", "issuer down"],
)
def test_a_trigger_that_cannot_verify_tokens_does_not_start(tmp_path, issuer, case):
    flags = ["--port", "1", "--oidc_issuer", issuer.url, "--oidc_audience", AUDIENCE]
    env = {**os.environ, "KFLOOP_HOME": str(tmp_path / "home"), "KFLOOP_KFP_HOST": ""}
    if case == "no audience":
        flags = flags[:-2]
    elif case == "issuer down":
        flags[3] = "http://127.0.0.1:9"
    else:  # a cryptography package that cannot be imported shadows the installed one
        shadow = tmp_path / "shadow" / "cryptography"
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text("raise ImportError('cryptography is not installed here')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow.parent), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "kfloop.serving.trigger.service", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    expected = {
        "no audience": "needs both an issuer (--oidc_issuer) and an audience",
        "no cryptography": "needs the 'cryptography' package",
        "issuer down": "cannot read the OIDC issuer's keys",
    }[case]
    assert line.startswith("error: ") and expected in line, line

"""The local canary gateway: ``kfloop serve`` as a subprocess with real predictor processes on
127.0.0.1, driven through ``kfloop.rollout.actions`` and ``LocalTarget``: traffic split, pinned routes, shadow
traffic, a canary killed mid-traffic, the printed curl commands, SIGINT and a restart that restores
the split, promote/rollback with registry stages; and, in this process, the clean-up when serve
crashes or a revision cannot start.

Revisions run without the drift transformer (``--no-transformer``): the bundles built here have no
drift detector, and the routing does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import aiohttp
import httpx
import psutil
import pytest
from multidict import CIMultiDict

from kfloop.cli.main import main as kfloop_main
from kfloop.cli.rollout import format_status, rollout_options
from kfloop.errors import ConfigError, InvalidRequest, KfloopError, RegistryError
from kfloop.rollout import actions as rollout
from kfloop.rollout.factory import make_target
from kfloop.rollout.targets.local import LocalTarget
from kfloop.serving.local.gateway import Gateway, split_pin
from kfloop.serving.local.routing import RouteState, load_state, pick, save_state
from kfloop.store.bundle import MODEL_FILE, write_manifest
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.conftest import free_port, wait_for
from tests.fakes.bundles import build_bundle, churn_frame
from tests.serving.local.conftest import ServeProcess

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

MODEL = "churn"
PREDICT = f"/v1/models/{MODEL}:predict"
ROW = {"instances": [{"tenure": 12, "charges": 70.5, "plan": "basic"}]}


def register_versions(home: Path, seeds=(0, 1, 2)) -> Registry:
    """A registry in ``home`` with one staging version of ``churn`` per seed (different boosters)."""
    registry = Registry(LocalStore(home))
    for seed in seeds:
        bundle_dir, _, _ = build_bundle(home.parent / f"bundle-{seed}", churn_frame(seed=seed), "churned")
        registry.register(MODEL, bundle_dir)
    return registry


class Served:
    """The module's ``kfloop serve`` (replaced by ``restart``), its rollout target and the registry."""

    def __init__(self, home: Path, registry: Registry):
        self.home, self.registry = home, registry
        self.serve = ServeProcess(home, "--no-transformer")

    @property
    def url(self) -> str:
        return self.serve.url

    @property
    def target(self) -> LocalTarget:
        return LocalTarget(self.url, token_file=self.serve.token_file)

    def status(self) -> dict:
        return self.target.status(MODEL)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``kfloop serve`` of v1 (made production by a rollout), v2 a 20% canary; v3 registered, not served."""
    home = tmp_path_factory.mktemp("gateway") / "home"
    registry = register_versions(home, seeds=(0,))
    served = Served(home, registry)
    try:
        rollout.deploy(registry, served.target, f"{MODEL}:1")
        register_versions(home, seeds=(1, 2))
        rollout.deploy(registry, served.target, f"{MODEL}:2", canary_percent=20)
        yield served
    finally:
        served.serve.kill()


class Reply(NamedTuple):
    status_code: int
    headers: CIMultiDict
    content: bytes

    def json(self):
        return json.loads(self.content)


def post_many(url: str, bodies: list[bytes], concurrency: int = 32, **headers) -> list:
    """POST every body, ``concurrency`` at a time; replies, or the exception a request raised.

    With aiohttp: here httpx.AsyncClient costs ~4 ms of client CPU per request (without the
    ``sniffio`` package httpcore retries ``import sniffio`` on every lock, ~0.1 ms each, and its pool
    polls every connection on each request), so the client would be the bottleneck."""

    async def run():
        gate = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as client:

            async def post(body: bytes) -> Reply:
                async with (
                    gate,
                    client.post(url, data=body, headers={"content-type": "application/json", **headers}) as r,
                ):
                    return Reply(r.status, CIMultiDict(r.headers), await r.read())

            return await asyncio.gather(*(post(b) for b in bodies), return_exceptions=True)

    return asyncio.run(run())


def revisions_of(responses) -> collections.Counter:
    return collections.Counter((r.headers["x-kfloop-revision"], r.headers["x-kfloop-model-version"]) for r in responses)


def pids_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.05)
    return False


# -- pure logic: routing states, the weighted pick, pins, state files, the CLI's target ----------


def test_route_state_steps():
    stable = RouteState(MODEL).deployed(1, None)
    assert stable == RouteState(MODEL, stable=1)
    canary = stable.deployed(2, 20)
    assert (canary.stable, canary.canary, canary.canary_percent) == (1, 2, 20)
    assert canary.describe() == "stable v1 80%, canary v2 20%"
    assert canary.deployed(2, 100) == RouteState(MODEL, stable=2)  # 100% is a full deploy
    assert canary.promoted() == RouteState(MODEL, stable=2)
    assert canary.rolled_back() == RouteState(MODEL, stable=1)
    shadowed = canary.shadowed(3, 10)
    assert shadowed.versions() == {1, 2, 3} and shadowed.role(3) == "shadow"
    assert shadowed.shadowed(None, 0).versions() == {1, 2}
    with pytest.raises(RegistryError, match="no stable revision"):
        RouteState(MODEL).deployed(1, 20)
    with pytest.raises(RegistryError, match="already the stable"):
        stable.deployed(1, 20)
    with pytest.raises(RegistryError, match="no canary to promote"):
        stable.promoted()
    with pytest.raises(InvalidRequest, match="canary_percent must be a whole number from 0 to 100; got 101"):
        stable.deployed(2, 101)


def test_pick_is_weighted_seeded_and_honours_pins():
    state = RouteState(MODEL, stable=1, canary=2, canary_percent=30)
    rng = random.Random(3)
    first = [pick(state, rng)[0] for _ in range(5000)]
    assert abs(first.count(2) / 5000 - 0.30) < 0.02
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert [pick(state, rng_a) for _ in range(50)] == [pick(state, rng_b) for _ in range(50)]
    assert all(sorted(pick(state, rng_a)) == [1, 2] for _ in range(20))  # the other one is the fallback
    assert pick(state, rng_a, "latest") == [2] and pick(state, rng_a, "prev") == [1]
    assert pick(RouteState(MODEL, stable=1), rng_a, "latest") == [1]
    assert pick(RouteState(MODEL), rng_a) == []


def test_pins_by_path_prefix_or_host():
    assert split_pin("/latest/v1/models/churn:predict", "127.0.0.1:8080") == ("latest", "/v1/models/churn:predict")
    assert split_pin("/prev/v2/models/churn/infer", "") == ("prev", "/v2/models/churn/infer")
    assert split_pin("/v1/models/churn:predict", "latest-churn.example.com") == ("latest", "/v1/models/churn:predict")
    assert split_pin("/v1/models/latest-churn:predict", "localhost") == (None, "/v1/models/latest-churn:predict")


def test_state_file_round_trip_and_corruption(tmp_path):
    state = RouteState(MODEL, stable=1, canary=2, canary_percent=20, shadow=3, shadow_percent=5)
    path = save_state(tmp_path, state)
    assert load_state(tmp_path, MODEL) == state and load_state(tmp_path, "other") is None
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="state.json is not valid"):
        load_state(tmp_path, MODEL)


def test_rollout_targets_and_status_lines(monkeypatch):
    args = argparse.Namespace(target=None, gateway="http://127.0.0.1:9", namespace=None)
    monkeypatch.setenv("KFLOOP_ROLLOUT_TARGET", "nowhere")
    with pytest.raises(ConfigError, match="'nowhere' is not a rollout target"):
        make_target(rollout_options(args))
    monkeypatch.setenv("KFLOOP_ROLLOUT_TARGET", "kubernetes")
    monkeypatch.setitem(sys.modules, "kfloop.rollout.targets.kubernetes", None)  # as if the module were not there
    with pytest.raises(ConfigError, match="needs kfloop/rollout/targets/kubernetes.py"):
        make_target(rollout_options(args))
    monkeypatch.delenv("KFLOOP_ROLLOUT_TARGET")
    target = make_target(rollout_options(args))
    with pytest.raises(KfloopError, match="no kfloop serve at http://127.0.0.1:9; start it with `kfloop serve`"):
        target.status(MODEL)
    doc = {
        "model": MODEL,
        "target": "local",
        "ready": True,
        "stable": {"version": 1, "percent": 80, "healthy": True},
        "canary": {"version": 2, "percent": 20, "healthy": False, "reason": "predictor process exited"},
    }
    assert format_status(doc).splitlines() == [
        "churn on local: ready",
        "  stable  v1     80%  healthy",
        "  canary  v2     20%  unhealthy: predictor process exited",
    ]


# -- kfloop serve with real processes ----------------------------------------------------------


def test_a_20_percent_canary_gets_20_percent_of_2000_requests(served):
    bodies = [
        json.dumps({"instances": [{"tenure": i % 70, "charges": 50.0 + i % 40, "plan": "pro"}]}).encode()
        for i in range(2000)
    ]
    responses = post_many(served.url + PREDICT, bodies)
    assert all(isinstance(r, Reply) and r.status_code == 200 for r in responses)
    counts = revisions_of(responses)
    assert set(counts) == {("stable", "1"), ("canary", "2")}
    assert abs(counts["canary", "2"] / 2000 - 0.20) <= 0.03, counts
    status = served.status()
    for role in ("stable", "canary"):  # bodies pass unchanged: the revision's own answer, byte for byte
        direct = httpx.post(status[role]["url"] + PREDICT, content=bodies[0], trust_env=False)
        via = httpx.post(served.url + ("/prev" if role == "stable" else "/latest") + PREDICT, content=bodies[0])
        assert via.content == direct.content and via.status_code == 200
    assert (status["stable"]["percent"], status["canary"]["percent"]) == (80, 20)
    assert status["stable"]["requests"] + status["canary"]["requests"] >= 2000


def test_pinned_routes_reach_one_revision(served):
    for prefix, expected in (("/latest", ("canary", "2")), ("/prev", ("stable", "1"))):
        responses = post_many(served.url + prefix + PREDICT, [json.dumps(ROW).encode()] * 30)
        assert revisions_of(responses) == {expected: 30}
        metadata = httpx.get(f"{served.url}{prefix}/v2/models/{MODEL}")
        assert metadata.json()["versions"] == [expected[1]]
    by_host = post_many(served.url + PREDICT, [json.dumps(ROW).encode()] * 10, host=f"latest-{MODEL}.example.com")
    assert revisions_of(by_host) == {("canary", "2"): 10}


def test_version_routes_reach_the_revision_serving_that_version_and_v2_is_the_server_metadata(served):
    v2 = {
        "id": "by-version",
        "inputs": [
            {"name": "tenure", "datatype": "FP32", "shape": [1], "data": [12]},
            {"name": "charges", "datatype": "FP32", "shape": [1], "data": [70.5]},
            {"name": "plan", "datatype": "BYTES", "shape": [1], "data": ["basic"]},
        ],
    }
    for version, role in (("1", "stable"), ("2", "canary")):
        base = f"{served.url}/v2/models/{MODEL}/versions/{version}"
        for _ in range(10):  # whatever the 80/20 split
            answer = httpx.post(f"{base}/infer", json=v2)
            assert answer.status_code == 200, answer.text
            assert (answer.headers["x-kfloop-revision"], answer.headers["x-kfloop-model-version"]) == (role, version)
            assert answer.json()["id"] == "by-version" and answer.json()["model_version"] == version
        assert httpx.get(f"{base}/ready").status_code == 200
        assert httpx.get(base).json()["versions"] == [version]
    for version in ("3", "x", "0"):  # registered but not served, not a number
        missing = httpx.post(f"{served.url}/v2/models/{MODEL}/versions/{version}/infer", json=v2)
        assert missing.status_code == 404 and f"version '{version}' is not served" in missing.json()["error"]
    for path in ("/v2", "/v2/"):
        metadata = httpx.get(served.url + path)
        assert metadata.status_code == 200 and metadata.json()["name"] == "kfloop"
        assert isinstance(metadata.json()["version"], str) and metadata.json()["extensions"] == []


def test_kserve_paths_health_and_errors(served):
    assert httpx.get(f"{served.url}/v2/models/{MODEL}/ready").status_code == 200
    assert httpx.get(f"{served.url}/v1/models/{MODEL}").json()["ready"] is True
    assert httpx.get(f"{served.url}/v2/health/ready").json() == {"ready": True, "models": {MODEL: True}}
    v2 = {
        "inputs": [
            {"name": "tenure", "datatype": "FP32", "shape": [1], "data": [3]},
            {"name": "charges", "datatype": "FP32", "shape": [1], "data": [80.0]},
            {"name": "plan", "datatype": "BYTES", "shape": [1], "data": ["team"]},
        ]
    }
    infer = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", json=v2)
    assert infer.status_code == 200 and infer.json()["outputs"][0]["shape"] == [1, 2]
    bad = httpx.post(served.url + PREDICT, json={"instances": [{"tenure": 1}]})
    assert bad.status_code == 400 and bad.headers["x-kfloop-revision"] in ("stable", "canary")
    unknown = httpx.post(f"{served.url}/v1/models/nope:predict", json=ROW)
    assert unknown.status_code == 404 and "'nope' is not served" in unknown.json()["error"]
    assert httpx.get(f"{served.url}/v2/models/nope/ready").status_code == 404
    assert httpx.get(f"{served.url}/elsewhere").status_code == 404
    auth = served.serve.auth
    assert httpx.get(f"{served.url}/kfloop/v1/models/nope", headers=auth).status_code == 404
    assert served.target.status("nope")["served"] is False
    bad_deploy = httpx.post(f"{served.url}/kfloop/v1/models/{MODEL}/deploy", json={"version": "two"}, headers=auth)
    assert bad_deploy.status_code == 400 and "'two'" in bad_deploy.json()["error"]
    bad_percent = httpx.post(
        f"{served.url}/kfloop/v1/models/{MODEL}/deploy", json={"version": 3, "canary_percent": 101}, headers=auth
    )
    assert bad_percent.status_code == 400 and "101" in bad_percent.json()["error"]


def test_shadow_records_answers_and_never_returns_them(served):
    status = served.target.shadow(MODEL, 3, 100)
    assert status["shadow"]["version"] == 3 and status["shadow"]["healthy"]
    bodies = [json.dumps({"instances": [{"tenure": i, "charges": 60.0, "plan": "team"}]}).encode() for i in range(40)]
    responses = post_many(served.url + PREDICT, bodies)
    assert all(r.status_code == 200 for r in responses)
    assert {v for _, v in revisions_of(responses)} <= {"1", "2"}  # the shadow never answers
    wait_for(lambda: served.status()["shadow"]["recorded"] == 40, what="40 shadow records")
    shadow = served.status()["shadow"]
    records = [json.loads(line) for line in Path(shadow["records"]).read_text().splitlines()]
    assert len(records) == 40 and {r["shadow"]["version"] for r in records} == {3}
    by_tenure = {r["request"]["instances"][0]["tenure"]: r for r in records}
    for i in (0, 17, 39):
        direct = httpx.post(shadow["url"] + PREDICT, content=bodies[i], trust_env=False).json()
        assert by_tenure[i]["shadow"]["response"] == direct and by_tenure[i]["shadow"]["status"] == 200
        assert by_tenure[i]["primary"]["response"] == responses[i].json()
        assert str(by_tenure[i]["primary"]["version"]) == responses[i].headers["x-kfloop-model-version"]
    pid = shadow["processes"]["predictor"]["pid"]
    assert served.target.shadow(MODEL, None, 0)["shadow"] is None
    assert pids_gone([pid])


def test_a_killed_canary_sends_its_traffic_to_stable_until_it_is_back(served):
    before = served.status()["canary"]
    results: list = []

    async def traffic(seconds: float, kill_after: float):
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            deadline = time.monotonic() + seconds

            async def worker():
                while time.monotonic() < deadline:
                    try:
                        results.append(await client.post(served.url + PREDICT, json=ROW))
                    except httpx.HTTPError as e:
                        results.append(e)

            tasks = [asyncio.create_task(worker()) for _ in range(8)]
            await asyncio.sleep(kill_after)
            os.kill(before["processes"]["predictor"]["pid"], signal.SIGKILL)
            await asyncio.gather(*tasks)

    asyncio.run(traffic(1.5, kill_after=0.4))
    failed = [r for r in results if not isinstance(r, httpx.Response) or r.status_code != 200]
    assert len(failed) <= 1, failed
    assert len(results) > 50 and revisions_of(results[-20:]) == {("stable", "1"): 20}
    canary = served.status()["canary"]
    assert canary["healthy"] is False and canary["version"] == 2
    back = wait_for(lambda: (s := served.status()["canary"])["healthy"] and s, what="the canary restarted")
    assert back["restarts"] == 1 and back["processes"]["predictor"]["pid"] != before["processes"]["predictor"]["pid"]
    responses = post_many(served.url + PREDICT, [json.dumps(ROW).encode()] * 200)
    assert revisions_of(responses)["canary", "2"] > 10


def test_kfloop_serve_printed_curl_commands_work(served):
    assert "churn has no production version; serving the latest staging version churn:1" in served.serve.output()
    curls = [shlex.split(line) for line in served.serve.lines if line.strip().startswith("curl")]
    assert len(curls) == 2
    for args in curls:
        url, body = next(a for a in args if a.startswith("http")), args[args.index("-d") + 1]
        response = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200 and response.headers["x-kfloop-revision"] in ("stable", "canary")


def test_sigint_stops_kfloop_serve_and_a_restart_restores_the_split(served):
    old = served.status()
    children = served.serve.children()
    assert sum("kfloop.serving.model_servers.predictor" in " ".join(c.cmdline()) for c in children) == 2
    started = time.monotonic()
    assert served.serve.interrupt() == 0
    assert time.monotonic() - started < 8
    assert pids_gone([c.pid for c in children], timeout=1)
    wait_for(lambda: "stopped" in served.serve.output(), timeout=5, what="kfloop serve's last line, 'stopped'")
    output = served.serve.output()
    assert "Traceback" not in output, output[-4000:]  # the tail names what went wrong
    served.serve = ServeProcess(served.home, "--no-transformer")
    assert f"restoring {MODEL} from" in served.serve.output()
    new = served.status()
    assert (new["stable"]["version"], new["canary"]["version"], new["canary"]["percent"]) == (1, 2, 20)
    assert new["ready"] and new["canary"]["url"] != old["canary"]["url"]
    counts = revisions_of(post_many(served.url + PREDICT, [json.dumps(ROW).encode()] * 300))
    assert set(counts) == {("stable", "1"), ("canary", "2")} and 30 <= counts["canary", "2"] <= 90


def test_promote_moves_all_traffic_and_the_production_stage(served):
    old_stable = served.status()["stable"]["processes"]["predictor"]["pid"]
    status = rollout.promote(served.registry, served.target, MODEL)
    assert status["stable"]["version"] == 2 and status["stable"]["percent"] == 100 and status["canary"] is None
    assert revisions_of(post_many(served.url + PREDICT, [json.dumps(ROW).encode()] * 50)) == {("stable", "2"): 50}
    stages = {r.version: r.stage for r in served.registry.list_versions(MODEL)}
    assert stages == {1: "archived", 2: "production", 3: "staging"}
    assert pids_gone([old_stable])


def test_rollback_drops_the_canary_and_rejects_it(served):
    status = rollout.deploy(served.registry, served.target, f"{MODEL}:3", canary_percent=50)
    assert status["canary"]["version"] == 3 and status["canary"]["percent"] == 50
    canary_pid = status["canary"]["processes"]["predictor"]["pid"]
    assert revisions_of(post_many(served.url + "/latest" + PREDICT, [b'{"instances": [[1, 2, "pro"]]}'])) == {
        ("canary", "3"): 1
    }
    status = rollout.rollback(served.registry, served.target, MODEL)
    assert status["canary"] is None and status["stable"]["version"] == 2
    assert revisions_of(post_many(served.url + PREDICT, [json.dumps(ROW).encode()] * 50)) == {("stable", "2"): 50}
    assert served.registry.get(MODEL, 3).stage == "rejected" and served.registry.get(MODEL, 2).stage == "production"
    assert pids_gone([canary_pid])
    assert json.loads((served.home / "serving" / MODEL / "state.json").read_text())["canary"] is None


# -- kfloop serve in this process ---------------------------------------------------------------


@pytest.fixture
def no_kfloop_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("KFLOOP_")]:
        monkeypatch.delenv(name)


def test_kfloop_serve_stops_its_servers_when_it_crashes(tmp_path, no_kfloop_env, monkeypatch):
    home = tmp_path / "home"
    register_versions(home, seeds=(0,))
    started: list[int] = []

    def crash(gateway, port, **kwargs):
        started.extend(p.pid for rev in gateway.controller.revisions.values() for p in rev.processes)
        raise RuntimeError("the gateway crashed")

    monkeypatch.setattr(Gateway, "server", crash)
    with pytest.raises(RuntimeError, match="crashed"):
        kfloop_main(["--home", str(home), "serve", "--port", str(free_port()), "--no-transformer"])
    assert started and pids_gone(started, timeout=1)


def test_a_canary_that_cannot_start_is_reported_and_nothing_is_left_running(tmp_path, no_kfloop_env, capsys):
    home = tmp_path / "home"
    registry = register_versions(home, seeds=(0,))
    registry.set_stage(MODEL, 1, "production")
    broken, _, _ = build_bundle(tmp_path / "broken", churn_frame(seed=5), "churned")
    (broken / MODEL_FILE).write_bytes(b"not a model")
    write_manifest(broken)
    registry.register(MODEL, broken)
    code = kfloop_main(
        [
            "--home",
            str(home),
            "serve",
            "--port",
            str(free_port()),
            "--no-transformer",
            "--canary",
            f"{MODEL}:2",
            "--canary-percent",
            "30",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "predictor of churn v2 exited with code" in err and "v2-predictor.log" in err
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(home) in " ".join(p.info["cmdline"] or [])]
    assert not [p for p in leftovers if p.status() != psutil.STATUS_ZOMBIE]

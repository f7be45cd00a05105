"""Load run: real clients through ``kfloop serve`` for minutes, bad inputs mixed in; statuses, memory, records.

    python benchmarks/load.py                 # 180 s of load (about 4 minutes in all)
    python benchmarks/load.py --seconds 30    # a smoke run

One run trains and registers a churn model (``kfloop pipeline run`` on ``sample:churn``, 2,000 rows, so
the bundle has a drift baseline), starts ``kfloop serve`` (gateway, drift transformer, predictor and the
retraining trigger, all on 127.0.0.1) and a second predictor with gRPC on (``kfloop serve`` routes HTTP
only), then loads them for ``--seconds`` with one process per client, at once:

- ``tritonclient.http``: V2 infer through the gateway, JSON and binary tensors in turn; every 5th request
  is bad (a string in a numeric input, or an input missing);
- ``kserve.InferenceRESTClient``: V1 predict and V2 infer in turn; every 5th request is bad (a feature
  missing, a wrong datatype);
- ``wrk`` (4 connections): V1 bodies in rotation, 1 in 4 bad (not JSON, a string for a number, no
  instances, ``true`` for a number); statuses counted by its Lua ``response`` hook;
- ``curl``, one process per request: good V1, a gzip body, an 8 KB ``x-request-id``, not JSON, a PUT;
- ``tritonclient.grpc`` against the gRPC predictor, in its own process (it and kserve register the
  same protobuf names); every 5th request has a string in a numeric input.

Every bad request must get a 4xx and every good one a 200: 5xx and unexpected statuses are counted
per client. The RSS of each server process is sampled every 5 s (first sample after a 15 s warm-up).
After the load ``kfloop serve`` is stopped with SIGINT (the transformer flushes its captures) and the
capture records are counted against the rows answered 200 through the gateway: records lost =
answered rows without a record, duplicated = records sharing a ``capture_id``. Prints a table per
client and the totals.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODEL = "churn"
SAMPLE = "sample:churn?n_rows=2000"
BAD_EVERY = 5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:g} s")


# -- what the clients send ------------------------------------------------------------------------


def test_rows(schema: dict, n: int = 200) -> list[dict]:
    """``n`` rows of fresh churn customers (feature name -> JSON value), as users send them."""
    from kfloop.training.samples import churn

    frame = churn(n, seed=11)
    names = [f["name"] for f in schema["features"]]
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame[names].to_dict("records")
    ]


def v1_bodies(rows: list[dict]) -> tuple[list[bytes], list[bytes]]:
    """Good one-row V1 bodies, and bad ones (each must be a 4xx)."""
    good = [json.dumps({"instances": [row]}).encode() for row in rows[:50]]
    numeric = next(k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    bad = [
        b"{not json",
        json.dumps({"instances": [{**rows[0], numeric: "many"}]}).encode(),
        json.dumps({"rows": [rows[0]]}).encode(),
        json.dumps({"instances": [{**rows[1], numeric: True}]}).encode(),
    ]
    return good, bad


# -- the client processes ---------------------------------------------------------------------------


def client_main(kind: str, url: str, seconds: str, rows_file: str, schema_file: str, out: str) -> None:
    rows = json.loads(Path(rows_file).read_text())
    schema = json.loads(Path(schema_file).read_text())
    stats = {"client": kind, "statuses": collections.Counter(), "unexpected": [], "ok_rows": 0, "requests": 0}
    deadline = time.monotonic() + float(seconds)
    {"triton-http": triton_client, "triton-grpc": triton_client, "kserve-rest": kserve_client, "curl": curl_client}[
        kind
    ](kind, url, rows, schema, deadline, stats)
    stats["statuses"] = dict(stats["statuses"])
    stats["unexpected"] = stats["unexpected"][:10]
    Path(out).write_text(json.dumps(stats))


def note(stats: dict, status: int, good: bool, n_rows: int = 1, what: str = "") -> None:
    stats["requests"] += 1
    stats["statuses"][str(status)] += 1
    if good and status == 200:
        stats["ok_rows"] += n_rows
    elif (good and status != 200) or (not good and not 400 <= status < 500):
        stats["unexpected"].append(f"{'good' if good else 'bad'} {what}: {status}")


def triton_client(kind, url, rows, schema, deadline, stats) -> None:
    import numpy as np

    if kind == "triton-grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(url)
    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    i = 0
    while time.monotonic() < deadline:
        i += 1
        row = rows[i % len(rows)]
        bad = i % BAD_EVERY == 0
        binary = i % 2 == 0
        inputs = []
        for name, feature_kind in kinds.items():
            value = row[name]
            if feature_kind == "categorical":
                tensor, data = tc.InferInput(name, [1], "BYTES"), np.array([str(value)], dtype=object)
            else:
                tensor, data = tc.InferInput(name, [1], "FP32"), np.array([value], dtype=np.float32)
                if bad and i % (2 * BAD_EVERY) == 0:  # a string in a numeric input
                    tensor, data = tc.InferInput(name, [1], "BYTES"), np.array(["lots"], dtype=object)
            if kind == "triton-grpc":
                tensor.set_data_from_numpy(data)
            else:
                tensor.set_data_from_numpy(data, binary_data=binary)
            inputs.append(tensor)
        if bad and i % (2 * BAD_EVERY) != 0:
            inputs = inputs[1:]  # an input missing
        try:
            client.infer(MODEL, inputs, request_id=f"{kind}-{i}")
            note(stats, 200, not bad, what="infer")
        except InferenceServerException as e:
            status = e.status()
            code = (
                int(status)
                if status and str(status).isdigit()
                else {"StatusCode.INVALID_ARGUMENT": 400}.get(str(status), 599)
            )
            note(stats, code, not bad, what=f"infer {str(e)[:80]}")


def kserve_client(kind, url, rows, schema, deadline, stats) -> None:
    import httpx
    import numpy as np
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    first_numeric = next(name for name, k in kinds.items() if k != "categorical")

    async def run():
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        i = 0
        try:
            while time.monotonic() < deadline:
                i += 1
                row = rows[i % len(rows)]
                bad = i % BAD_EVERY == 0
                try:
                    if i % 2:
                        body = {"instances": [dict(list(row.items())[1:]) if bad else row]}  # bad: a feature missing
                        await v1.infer(url, body, model_name=MODEL, headers={"x-request-id": f"ks1-{i}"})
                    else:
                        inputs = []
                        for name, feature_kind in kinds.items():
                            if feature_kind == "categorical" or (bad and name == first_numeric):
                                tensor = InferInput(name, [1], "BYTES")  # bad: BYTES for a number
                                tensor.set_data_from_numpy(np.array([str(row[name])], dtype=object))
                            else:
                                tensor = InferInput(name, [1], "FP64")
                                tensor.set_data_from_numpy(np.array([row[name]], dtype=np.float64))
                            inputs.append(tensor)
                        await v2.infer(url, InferRequest(MODEL, inputs, request_id=f"ks2-{i}"), model_name=MODEL)
                    note(stats, 200, not bad, what="infer")
                except httpx.HTTPStatusError as e:
                    note(stats, e.response.status_code, not bad, what=f"infer {e.response.text[:80]}")
        finally:
            await v1.close()
            await v2.close()

    asyncio.run(run())


def curl_client(kind, url, rows, schema, deadline, stats) -> None:
    predict = f"{url}/v1/models/{MODEL}:predict"
    good, _ = v1_bodies(rows)
    gz = gzip.compress(good[0])
    cases = [
        ("good", True, ["-X", "POST", "-H", "content-type: application/json", "--data-binary", good[0].decode()]),
        ("gzip", False, ["-X", "POST", "-H", "content-encoding: gzip", "--data-binary", "@-"]),
        ("long id", False, ["-X", "POST", "-H", "x-request-id: " + "r" * 8200, "--data-binary", good[1].decode()]),
        ("not json", False, ["-X", "POST", "--data-binary", "instances"]),
        ("put", False, ["-X", "PUT", "--data-binary", good[2].decode()]),
    ]
    i = 0
    while time.monotonic() < deadline:
        what, ok, args = cases[i % len(cases)]
        i += 1
        proc = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", *args, predict],
            input=gz if what == "gzip" else None,
            capture_output=True,
        )
        status = int(proc.stdout or 0) or 599
        note(stats, status, ok, what=what)


WRK_SCRIPT = r"""
local bodies = { %(bodies)s }
local good = { %(good)s }
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} ok = 0 i = 0 end
function request()
  i = i + 1
  local k = (i %% #bodies) + 1
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, bodies[k])
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %%d %%d\n", k, v)) end
  local e = summary.errors
  io.write(string.format("errors %%d %%d %%d %%d %%d\n", e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_client(url: str, rows: list[dict], seconds: float, folder: Path) -> subprocess.Popen:
    good, bad = v1_bodies(rows)
    bodies = []
    for k in range(len(good)):  # 1 in 4 bad
        bodies.append(good[k])
        if k % 3 == 2:
            bodies.append(bad[(k // 3) % len(bad)])
    lua = lambda b: "[==[" + b.decode() + "]==]"  # noqa: E731
    script = folder / "load.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "bodies": ", ".join(lua(b) for b in bodies),
            "good": ", ".join("true" if b in good else "false" for b in bodies),
            "path": f"/v1/models/{MODEL}:predict",
        }
    )
    (folder / "wrk-bodies.json").write_text(json.dumps([b in good for b in bodies]))
    return subprocess.Popen(
        ["wrk", "-t2", "-c4", f"-d{int(seconds)}s", "--timeout", "30s", "-s", str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wrk_stats(output: str, good_share: float) -> dict:
    statuses = {}
    errors = [0] * 5
    for line in output.splitlines():
        parts = line.split()
        if parts[:1] == ["status"]:
            statuses[parts[1]] = int(parts[2])
        elif parts[:1] == ["errors"]:
            errors = [int(p) for p in parts[1:]]
    total = sum(statuses.values())
    ok = statuses.get("200", 0)
    expected_ok = round(total * good_share)
    unexpected = [f"{code}: {n}" for code, n in statuses.items() if code != "200" and not 400 <= int(code) < 500]
    if abs(ok - expected_ok) > 8:  # requests in flight at the end are counted by neither
        unexpected.append(f"200 answers {ok}, good bodies sent ~{expected_ok}")
    if errors[0] or errors[1] or errors[2] or errors[4]:  # errors[3] counts non-2xx answers: the 4xx above
        unexpected.append(f"socket errors connect/read/write/timeout {errors[:3] + errors[4:]}")
    return {"client": "wrk", "statuses": statuses, "unexpected": unexpected, "ok_rows": ok, "requests": total}


# -- the servers --------------------------------------------------------------------------------------


def tree_rss(root_pid: int) -> dict[str, int]:
    """RSS (bytes) per server of ``kfloop serve``'s process tree."""
    import psutil

    out: dict[str, int] = collections.Counter()
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    for p in procs:
        try:
            cmd = " ".join(p.cmdline())
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        name = "gateway (kfloop serve)" if p.pid == root_pid else None
        for marker, label in (
            ("model_servers.transformer", "transformer"),
            ("model_servers.predictor", "predictor"),
            ("trigger.service", "trigger"),
        ):
            if marker in cmd:
                name = label
        if name:
            out[name] += rss
    return dict(out)


class MemorySampler(threading.Thread):
    def __init__(self, pids: dict[str, int], every: float = 5.0):
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stopping.wait(self.every):
            sample: dict[str, int] = {}
            for label, pid in self.pids.items():
                sample.update(tree_rss(pid) if label == "serve" else {label: tree_rss(pid).get("predictor", 0)})
            self.samples.append((time.monotonic() - start, sample))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0, help="length of the load (default 180)")
    p.add_argument("--client", help=argparse.SUPPRESS)  # internal: run one client process
    p.add_argument("--args", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        client_main(args.client, *args.args)
        return
    with tempfile.TemporaryDirectory(prefix="kfloop-load-") as tmp:
        run(Path(tmp), args.seconds)


def run(tmp: Path, seconds: float) -> None:
    import httpx

    from kfloop.store.objects import LocalStore
    from kfloop.store.registry import Registry

    home = tmp / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFLOOP_")}
    kfloop = [sys.executable, "-m", "kfloop.cli", "--home", str(home)]
    log(f"training {MODEL} on {SAMPLE}")
    trained = subprocess.run(
        [*kfloop, "pipeline", "run", "--data", SAMPLE, "--json"], env=env, capture_output=True, text=True
    )
    if trained.returncode != 0:
        raise SystemExit(f"kfloop pipeline run failed:\n{trained.stderr[-2000:]}")
    record = Registry(LocalStore(home)).resolve(MODEL)
    schema = record.schema
    rows = test_rows(schema)
    (tmp / "rows.json").write_text(json.dumps(rows))
    (tmp / "schema.json").write_text(json.dumps(schema))

    port, trigger_port, grpc_port, grpc_http = free_port(), free_port(), free_port(), free_port()
    serve = subprocess.Popen(
        [*kfloop, "serve", "--port", str(port), "--trigger-port", str(trigger_port)],
        env=env,
        stdout=open(tmp / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    bundle = tmp / "grpc-bundle"
    Registry(LocalStore(home)).fetch_bundle(record.ref, bundle)
    grpc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kfloop.serving.model_servers.predictor",
            "--model_dir",
            str(bundle),
            "--model_name",
            MODEL,
            "--http_port",
            str(grpc_http),
            "--enable_grpc",
            "true",
            "--grpc_port",
            str(grpc_port),
        ],
        env=env,
        stdout=open(tmp / "grpc-predictor.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", 120)
        wait_http(f"http://127.0.0.1:{grpc_http}/v2/models/{MODEL}/ready", 120)
        log(f"kfloop serve on {url}, gRPC predictor on 127.0.0.1:{grpc_port}; loading for {seconds:g} s")
        sampler = MemorySampler({"serve": serve.pid, "predictor (gRPC)": grpc.pid})
        sampler.start()
        clients = {
            "tritonclient.http": ("triton-http", f"127.0.0.1:{port}"),
            "kserve InferenceRESTClient": ("kserve-rest", url),
            "curl": ("curl", url),
            "tritonclient.grpc": ("triton-grpc", f"127.0.0.1:{grpc_port}"),
        }
        procs = {}
        for label, (kind, target) in clients.items():
            out = tmp / f"{kind}.json"
            cmd = [
                sys.executable,
                __file__,
                "--client",
                kind,
                "--args",
                target,
                str(seconds),
                str(tmp / "rows.json"),
                str(tmp / "schema.json"),
                str(out),
            ]
            procs[label] = (subprocess.Popen(cmd, env=env), out)
        wrk = wrk_client(url, rows, seconds, tmp)
        wrk_out, _ = wrk.communicate(timeout=seconds + 120)
        results = []
        for label, (proc, out) in procs.items():
            proc.wait(timeout=seconds + 120)
            result = json.loads(out.read_text()) if out.exists() else {}
            result = {"statuses": {}, "ok_rows": 0, "requests": 0, "unexpected": ["no result"], **result}
            results.append({**result, "client": label})
        good = json.loads((tmp / "wrk-bodies.json").read_text())
        results.insert(2, {**wrk_stats(wrk_out, sum(good) / len(good)), "client": "wrk (4 connections)"})
        sampler.stopping.set()
        sampler.join()
        health = httpx.get(f"{url}/v2/health/ready", timeout=10, trust_env=False).status_code
    finally:
        os.killpg(grpc.pid, signal.SIGTERM)
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        try:
            grpc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(grpc.pid, signal.SIGKILL)
    report(results, sampler.samples, home, serve.returncode, health, seconds)


def report(results: list[dict], samples: list, home: Path, serve_code: int, health: int, seconds: float) -> None:
    from kfloop.monitoring.capture import read_captures
    from kfloop.store.objects import LocalStore

    print(f"\nLoad run: {seconds:g} s, all clients at once, bad inputs mixed in\n")
    print("| client | requests | 200 | 4xx | 5xx | other | unexpected |")
    print("|---|---|---|---|---|---|---|")
    totals = collections.Counter()
    for r in results:
        s = {int(k): v for k, v in r["statuses"].items()}
        ok = s.get(200, 0)
        c4 = sum(v for k, v in s.items() if 400 <= k < 500)
        c5 = sum(v for k, v in s.items() if 500 <= k < 600)
        other = sum(s.values()) - ok - c4 - c5
        totals.update(requests=sum(s.values()), ok=ok, c4=c4, c5=c5, other=other, unexpected=len(r["unexpected"]))
        detail = "; ".join(r["unexpected"][:3]) or "none"
        print(f"| {r['client']} | {sum(s.values())} | {ok} | {c4} | {c5} | {other} | {detail} |")
    print(
        f"| **all** | {totals['requests']} | {totals['ok']} | {totals['c4']} | {totals['c5']} | {totals['other']} | "
        f"{totals['unexpected']} |"
    )
    warm = [s for t, s in samples if t >= 15] or [s for _, s in samples]
    if warm:
        print("\n| server | RSS after warm-up MB | RSS at the end MB | max MB | growth MB |")
        print("|---|---|---|---|---|")
        for name in sorted(warm[0]):
            values = [s.get(name, 0) / 2**20 for s in warm]
            print(
                f"| {name} | {values[0]:.0f} | {values[-1]:.0f} | {max(values):.0f} | {values[-1] - values[0]:+.0f} |"
            )
    answered = sum(r["ok_rows"] for r in results if r["client"] != "tritonclient.grpc")
    records = read_captures(LocalStore(home), MODEL)
    ids = collections.Counter(r["capture_id"] for r in records)
    duplicated = sum(n - 1 for n in ids.values() if n > 1)
    print(
        f"\nCaptures: {answered} rows answered 200 through the gateway, {len(records)} records stored, "
        f"{max(0, answered - len(records))} lost, {duplicated} duplicated"
        + (
            f" ({len(records) - answered} more records than counted answers: wrk's requests in flight at its end)"
            if len(records) > answered
            else ""
        )
        + ". Gateway ready after the load: "
        f"HTTP {health}; kfloop serve exited with code {serve_code}."
    )


if __name__ == "__main__":
    main()

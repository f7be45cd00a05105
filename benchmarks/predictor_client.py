"""Benchmark: the CPU the drift transformer's predictor client spends per call, kfloop's ``HttpPool``
against aiohttp (the client it replaced) and httpx (KServe's own ``InferenceRESTClient``'s).

    python benchmarks/predictor_client.py              # 3000 calls per client, 3 rounds
    python benchmarks/predictor_client.py --calls 500  # a smoke run

Starts one kfloop predictor on 127.0.0.1 (a churn bundle as ``benchmarks/serving.py`` builds it) and
POSTs the same one-row V1 body to it from this process, one call at a time, on one event loop
(uvloop, as the transformer runs). ``client ms/call`` is this process's CPU time per call: the
client's work plus its share of the event loop; ``wall ms/call`` includes the predictor's answer.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import uvloop

from kfloop.serving.model_servers.http_pool import HttpPool
from serving import MODEL, build_models, kfloop_server, log, write_bodies

PATH = f"/v1/models/{MODEL}:predict"
HEADERS = {"content-type": "application/json", "x-request-id": "bench"}


async def with_http_pool(url: str, body: bytes, calls: int) -> tuple[float, float]:
    pool = HttpPool(url)
    try:
        return await _timed(lambda: pool.post(PATH, body, HEADERS, 10), calls)
    finally:
        await pool.aclose()


async def with_aiohttp(url: str, body: bytes, calls: int) -> tuple[float, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def call():
            async with session.post(url + PATH, data=body, headers=HEADERS) as response:
                return response.status, await response.read()

        return await _timed(call, calls)


async def with_httpx(url: str, body: bytes, calls: int) -> tuple[float, float]:
    async with httpx.AsyncClient() as client:
        return await _timed(lambda: client.post(url + PATH, content=body, headers=HEADERS), calls)


async def _timed(call, calls: int) -> tuple[float, float]:
    """(client CPU ms per call, wall ms per call) over ``calls`` calls after one warm-up call."""
    await call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - cpu) / calls * 1e3, (time.perf_counter() - wall) / calls * 1e3


CLIENTS = {"kfloop HttpPool": with_http_pool, "aiohttp": with_aiohttp, "httpx": with_httpx}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per client per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the clients (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kfloop-client-bench-") as tmp:
        work = Path(tmp)
        log("building the churn bundle")
        models = build_models(work, 10_000)  # enough test rows for serving.py's 100-row bodies
        body = write_bodies(models, None, work / "bodies")["v1", 1][0].read_bytes()
        (work / "logs").mkdir()
        predictor = kfloop_server("predictor", "predictor", work / "logs", "--model_dir", str(models.bundle))
        try:
            predictor.wait_ready()
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
            for i in range(args.rounds):
                for name, client in CLIENTS.items():
                    results[name].append(uvloop.run(client(predictor.url, body, args.calls)))
                    log(f"round {i + 1}: {name} {results[name][-1][0]:.3f} ms CPU per call")
        finally:
            predictor.stop()
    print(
        f"\n{'client':<16} {'client ms/call':>14} {'wall ms/call':>12}   (median of {args.rounds} rounds "
        f"of {args.calls} one-row V1 calls)"
    )
    for name, samples in results.items():
        print(
            f"{name:<16} {statistics.median(s[0] for s in samples):>14.3f} "
            f"{statistics.median(s[1] for s in samples):>12.3f}"
        )


if __name__ == "__main__":
    main()

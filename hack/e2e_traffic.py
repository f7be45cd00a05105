"""Traffic for hack/e2e-kind.sh: V1 requests of customers from ``sample:churn`` to an InferenceService.

    python hack/e2e_traffic.py --url http://127.0.0.1:8081 --host churn-transformer.kubeflow.example.com \
        --model churn --seconds 60 [--age-shift 15] [--rps 20] [--rows 5] [--seed 0]

Sends ``--rps`` requests a second of ``--rows`` rows each for ``--seconds`` seconds through the
cluster's ingress (``--url``, a port-forward of Kourier; ``--host`` the Host header Kourier routes on),
with the customers ``--age-shift`` years older (the demo's data drift: the rows of
``sample:churn?age_shift=15``). Prints one summary line (requests, errors, answers by model version)
and exits 1 when no request was answered.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import httpx

from kfloop.names import MODEL_VERSION_HEADER, REQUEST_ID_HEADER
from kfloop.training.samples import churn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="ingress URL, e.g. http://127.0.0.1:8081")
    p.add_argument("--host", required=True, help="Host header of the InferenceService")
    p.add_argument("--model", default="churn")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rps", type=float, default=20.0)
    p.add_argument("--rows", type=int, default=5)
    p.add_argument("--age-shift", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.rps <= 0 or args.rows <= 0:
        print("error: --seconds, --rps and --rows must be positive", file=sys.stderr)
        return 2
    url = f"{args.url.rstrip('/')}/v1/models/{args.model}:predict"
    pool: list[dict] = []
    seed, n, errors = args.seed, 0, 0
    versions: collections.Counter = collections.Counter()
    end, next_at = time.monotonic() + args.seconds, time.monotonic()
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        while time.monotonic() < end:
            if len(pool) < args.rows:
                frame = churn(1000, seed, age_shift=args.age_shift).drop(columns=["churn"])
                pool += json.loads(frame.to_json(orient="records"))
                seed += 7919
            instances, pool = pool[: args.rows], pool[args.rows :]
            headers = {"Host": args.host, REQUEST_ID_HEADER: f"e2e-{args.seed}-{n}"}
            try:
                r = client.post(url, json={"instances": instances}, headers=headers)
                if r.status_code == 200:
                    versions[r.headers.get(MODEL_VERSION_HEADER, "?")] += 1
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            n += 1
            next_at = max(next_at + 1.0 / args.rps, time.monotonic() - 1.0)
            time.sleep(max(0.0, next_at - time.monotonic()))
    answered = sum(versions.values())
    by_version = ", ".join(f"v{v}: {c}" for v, c in sorted(versions.items())) or "none"
    print(f"traffic (age_shift={args.age_shift:g}): {n} requests, {errors} errors, answered by {by_version}")
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())

"""Shadow traffic: copies of live requests sent to a candidate revision whose answers are only recorded.

KServe has no request mirroring (kserve#2978), so the local gateway does it: after the live
revision answered, a share of the prediction requests is sent again, in the background, to the
shadow revision. Its answer is never returned to the caller; each one becomes a JSON line in
``<KFLOOP_HOME>/serving/<model>/shadow/v<version>.jsonl`` next to the live answer::

    {"time": "2026-01-01T12:00:00.123456Z", "model": "churn", "path": "/v1/models/churn:predict",
     "request": {...},
     "shadow": {"version": 3, "status": 200, "latency_ms": 2.1, "response": {...}},   # or "error"
     "primary": {"revision": "stable", "version": 1, "status": 200, "response": {...}}}

At most ``max_in_flight`` mirrored requests run at once; more are dropped (and counted), so a
slow shadow revision never piles up work behind live traffic.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path
from typing import BinaryIO

import aiohttp
import orjson

from kfloop.serving.local.revisions import Revision
from kfloop.timestamps import rfc3339

log = logging.getLogger(__name__)


class ShadowRecorder:
    """Mirrors requests to shadow revisions and appends their answers to JSONL files under ``root``."""

    def __init__(self, root: Path, max_in_flight: int = 64):
        self.root, self.max_in_flight = Path(root), max_in_flight
        self.counts: collections.Counter = collections.Counter()  # (model, version, what) -> n
        self._tasks: set[asyncio.Task] = set()
        self._files: dict[Path, BinaryIO] = {}

    def path(self, model: str, version: int) -> Path:
        return self.root / model / "shadow" / f"v{version}.jsonl"

    def mirror(
        self,
        client: aiohttp.ClientSession,
        rev: Revision,
        path: str,
        headers: list,
        body: bytes,
        primary: dict,
        primary_body: bytes,
    ) -> bool:
        """Send ``body`` to ``rev`` in the background and record its answer with the live one
        (``primary``: revision, version, status; ``primary_body``); False (and counted) when too
        many are in flight."""
        if len(self._tasks) >= self.max_in_flight:
            self.counts[rev.model, rev.version, "dropped"] += 1
            return False
        task = asyncio.get_running_loop().create_task(
            self._send(client, rev, path, headers, body, {**primary, "response": primary_body})
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _send(
        self, client: aiohttp.ClientSession, rev: Revision, path: str, headers: list, body: bytes, primary: dict
    ) -> None:
        start = time.perf_counter()
        try:
            async with client.post(rev.url + path, data=body, headers=headers) as response:
                content = await response.read()
            shadow = {
                "version": rev.version,
                "status": response.status,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                "response": _json(content),
            }
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self.counts[rev.model, rev.version, "errors"] += 1
            shadow = {"version": rev.version, "error": f"{type(e).__name__}: {e}"}
        primary["response"] = _json(primary["response"])
        self._write(
            rev.model,
            rev.version,
            {
                "time": rfc3339(),
                "model": rev.model,
                "path": path,
                "request": _json(body),
                "shadow": shadow,
                "primary": primary,
            },
        )

    def _write(self, model: str, version: int, record: dict) -> None:
        path = self.path(model, version)
        out = self._files.get(path)
        if out is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = self._files[path] = open(path, "ab")
        out.write(orjson.dumps(record) + b"\n")
        out.flush()
        self.counts[model, version, "recorded"] += 1

    def stats(self, model: str, version: int) -> dict:
        return {
            "records": str(self.path(model, version)),
            **{what: self.counts[model, version, what] for what in ("recorded", "errors", "dropped")},
        }

    async def aclose(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) for mirrored requests in flight, then close the files."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for out in self._files.values():
            out.close()
        self._files.clear()


def _json(body: bytes):
    """A body as JSON when it is JSON, else as text."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")

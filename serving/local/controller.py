"""The local controller: keeps the processes on this machine in step with each model's routing state.

It plays the part Knative and the KServe controller play on a cluster. Every rollout step
(deploy, promote, rollback, shadow) computes the next ``RouteState`` and ``apply`` makes it so:
it fetches the bundles of versions not yet running into ``<KFLOOP_HOME>/serving/<model>/<version>/``
(``Registry.fetch_bundle``), starts their revisions and waits until they are ready, only then
switches the routing (and saves ``state.json``), and finally stops the revisions no longer used.
A health watcher restarts revision processes that died (with backoff) and re-enables a revision
once it answers its ready endpoint again.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import logging
import os
import time
from pathlib import Path

import httpx

from kfloop.config import Settings
from kfloop.errors import KfloopError, ModelNotFound
from kfloop.processes import GRACE_SECONDS
from kfloop.serving.local.revisions import Revision, stop_all_sync
from kfloop.serving.local.routing import RouteState, load_state, save_state, state_path
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry

log = logging.getLogger(__name__)
MAX_RESTART_BACKOFF = 30.0
START_ATTEMPTS = 2
PORT_TAKEN = "address already in use"  # uvicorn's bind error, in the log tail of the exit error


def transformer_available() -> bool:
    return importlib.util.find_spec("kfloop.serving.model_servers.transformer") is not None


class LocalController:
    """Revisions of the models served by one ``kfloop serve``, and their routing states."""

    def __init__(
        self,
        settings: Settings,
        *,
        use_transformer: bool = True,
        ready_timeout: float = 120.0,
        health_interval: float = 1.0,
        grace: float = GRACE_SECONDS,
        registry: Registry | None = None,
        predictor_args: tuple[str, ...] = (),
        transformer_args: tuple[str, ...] = (),
    ):
        self.registry = registry or Registry(open_store(settings))
        self.server_args = {"predictor_args": tuple(predictor_args), "transformer_args": tuple(transformer_args)}
        self.root = Path(settings.home).resolve() / "serving"
        self.ready_timeout, self.health_interval, self.grace = ready_timeout, health_interval, grace
        self.transformer = use_transformer and transformer_available()
        if use_transformer and not self.transformer:
            log.warning("kfloop.serving.model_servers.transformer is not installed; routing straight to the predictors")
        self.env = {**os.environ, **settings.storage_env(), "PYTHONUNBUFFERED": "1"}
        self.routes: dict[str, RouteState] = {}
        self.revisions: dict[tuple[str, int], Revision] = {}
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._client: httpx.AsyncClient | None = None
        self._watcher: asyncio.Task | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    # -- reading (the gateway's hot path) ----------------------------------------------------------

    def route(self, model: str) -> RouteState | None:
        return self.routes.get(model)

    def revision(self, model: str, version: int | None) -> Revision | None:
        return self.revisions.get((model, version))

    def status(self, model: str) -> dict:
        """The status document of ``kfloop.rollout.actions.RolloutTarget.status``, with process details."""
        state = self.routes.get(model)
        if state is None:
            served = ", ".join(sorted(self.routes)) or "none"
            raise ModelNotFound(f"model {model!r} is not served by this gateway (served: {served})")
        stable_percent = 100 - state.canary_percent if state.canary is not None else 100
        doc = {
            "model": model,
            "target": "local",
            "transformer": self.transformer,
            "state_file": str(state_path(self.root, model)),
            "stable": self._entry(model, state.stable, stable_percent),
            "canary": self._entry(model, state.canary, state.canary_percent),
            "shadow": self._entry(model, state.shadow, state.shadow_percent),
        }
        doc["ready"] = any(doc[role] and doc[role]["healthy"] for role in ("stable", "canary"))
        return doc

    def _entry(self, model: str, version: int | None, percent: int) -> dict | None:
        if version is None:
            return None
        rev = self.revisions.get((model, version))
        running = rev.to_dict() if rev else {"version": version, "healthy": False, "reason": "not running"}
        return {**running, "percent": percent}

    # -- rollout steps -----------------------------------------------------------------------------

    async def deploy(self, model: str, version: int, canary_percent: int | None = None) -> dict:
        return await self._step(model, lambda s: s.deployed(version, canary_percent), new_ok=True)

    async def promote(self, model: str) -> dict:
        return await self._step(model, RouteState.promoted)

    async def rollback(self, model: str) -> dict:
        return await self._step(model, RouteState.rolled_back)

    async def shadow(self, model: str, version: int | None, percent: int) -> dict:
        return await self._step(model, lambda s: s.shadowed(version, percent))

    def saved_state(self, model: str) -> RouteState | None:
        """The routing of ``model`` saved by a previous gateway, if any."""
        return load_state(self.root, model)

    async def restore(self, model: str) -> RouteState | None:
        """Bring back the routing saved in ``state.json``; None when there is none."""
        saved = self.saved_state(model)
        if saved is not None:
            await self.apply(saved)
        return saved

    async def _step(self, model: str, step, new_ok: bool = False) -> dict:
        async with self._locks[model]:
            if model not in self.routes and not new_ok:
                self.status(model)  # raises ModelNotFound
            return await self._apply(step(self.routes.get(model) or RouteState(model)))

    async def apply(self, state: RouteState) -> dict:
        """Start what ``state`` needs, switch the routing to it, stop what it no longer needs."""
        async with self._locks[state.model]:
            return await self._apply(state)

    async def _apply(self, state: RouteState) -> dict:
        await self._start(state, [v for v in sorted(state.versions()) if (state.model, v) not in self.revisions])
        self.routes[state.model] = state
        save_state(self.root, state)
        unused = [k for k in self.revisions if k[0] == state.model and k[1] not in state.versions()]
        await asyncio.gather(*(self.revisions.pop(k).stop(self.grace) for k in unused))
        log.info("%s: %s", state.model, state.describe())
        return self.status(state.model)

    async def _start(self, state: RouteState, versions: list[int]) -> None:
        """Start the revisions of ``versions`` and wait until they are ready; once more, on other
        ports, when a server found its port taken (another process can take a free port between
        ``free_port`` and the server's bind)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return await self._start_once(state, versions)
            except KfloopError as e:
                if attempt == START_ATTEMPTS or PORT_TAKEN not in str(e):
                    raise
                log.warning(
                    "%s: a server's port was taken before it could bind it; starting again on other ports", state.model
                )

    async def _start_once(self, state: RouteState, versions: list[int]) -> None:
        model, started = state.model, []
        try:
            for version in versions:
                _, bundle_dir = await asyncio.to_thread(
                    self.registry.fetch_bundle, f"{model}:{version}", self.root / model / str(version)
                )
                rev = Revision(
                    model,
                    version,
                    bundle_dir,
                    self.root / model / "logs",
                    label=state.role(version),
                    transformer=self.transformer,
                    env=self.env,
                    journal_dir=self.root / model / "journal" / f"v{version}",
                    **self.server_args,
                )
                self.revisions[(model, version)] = rev
                started.append(rev)
                rev.start()  # on the event loop's thread, which lives as long as the gateway
            await _all_or_nothing([rev.wait_ready(self.client, self.ready_timeout) for rev in started])
        except BaseException:
            for rev in started:
                self.revisions.pop((model, rev.version), None)
            stop_all_sync(started, self.grace)
            raise

    # -- health ------------------------------------------------------------------------------------

    def mark_unhealthy(self, rev: Revision, reason: str) -> None:
        """Take ``rev`` out of the weighted routing until the watcher finds it ready again."""
        if rev.healthy:
            log.warning(
                "%s v%d is unhealthy (%s); its traffic goes to the other revision until it recovers",
                rev.model,
                rev.version,
                reason,
            )
        rev.healthy, rev.reason = False, reason

    def start_watching(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            for key in [(m, v) for m, s in self.routes.items() for v in s.versions()]:
                rev = self.revisions.get(key)
                if rev is not None:
                    try:
                        await self._check(rev)
                    except Exception:  # keep watching the others
                        log.exception("health check of %s v%d failed", *key)

    async def _check(self, rev: Revision) -> None:
        dead = rev.exited()
        if dead:
            self.mark_unhealthy(rev, "; ".join(f"{p.kind} process exited with code {p.exit_code()}" for p in dead))
            if time.monotonic() >= rev.next_restart:
                rev.restart_exited()
                rev.next_restart = time.monotonic() + min(MAX_RESTART_BACKOFF, 2.0**rev.restarts)
                log.warning(
                    "%s v%d: restarted %s (restart %d)",
                    rev.model,
                    rev.version,
                    ", ".join(p.kind for p in dead),
                    rev.restarts,
                )
        elif not rev.healthy and rev.reason != "starting" and await rev.check(self.client):
            rev.healthy, rev.reason = True, ""
            log.warning("%s v%d is healthy again; routing traffic to it", rev.model, rev.version)

    # -- shutdown ----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the watcher and every revision (SIGTERM, then SIGKILL after the grace period)."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        revisions, self.revisions = list(self.revisions.values()), {}
        await asyncio.gather(*(rev.stop(self.grace) for rev in revisions))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def kill_all(self) -> None:
        """Blocking stop of every revision, for ``finally`` blocks (no event loop needed)."""
        revisions, self.revisions = list(self.revisions.values()), {}
        stop_all_sync(revisions, self.grace)


async def _all_or_nothing(coroutines: list) -> None:
    """Await all; on the first error cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it again

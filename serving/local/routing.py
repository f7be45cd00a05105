"""The routing state of one model served by the local gateway, and how a request picks a revision.

A ``RouteState`` says which registered versions run and what share of the traffic each takes:
``stable`` answers ``100 - canary_percent`` percent, ``canary`` (if any) ``canary_percent``;
``shadow`` (if any) receives a mirrored copy of ``shadow_percent`` percent of the predictions,
and its answers are only recorded. Rollout steps are pure functions from one state to the next
(``deployed``, ``promoted``, ``rolled_back``, ``shadowed``); the controller makes the processes
match the new state. The state is saved as ``<KFLOOP_HOME>/serving/<model>/state.json`` so a
restarted ``kfloop serve`` comes back with the same split.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

from kfloop.errors import ConfigError, InvalidRequest, RegistryError

STATE_FILE = "state.json"
PINS = {"latest", "prev"}  # like KServe's tag routes: latest = the newest revision, prev = stable


@dataclasses.dataclass(frozen=True)
class RouteState:
    """Which versions of ``model`` serve, and their traffic shares (percent)."""

    model: str
    stable: int | None = None
    canary: int | None = None
    canary_percent: int = 0
    shadow: int | None = None
    shadow_percent: int = 0

    def versions(self) -> set[int]:
        """Every version that needs running processes."""
        return {v for v in (self.stable, self.canary, self.shadow) if v is not None}

    def role(self, version: int) -> str:
        return "stable" if version == self.stable else "canary" if version == self.canary else "shadow"

    def deployed(self, version: int, canary_percent: int | None) -> RouteState:
        """``version`` takes all traffic (no percentage, or 100) or becomes the canary."""
        percent = check_percent(canary_percent, "canary_percent")
        if percent is None or percent == 100:
            return dataclasses.replace(self, stable=version, canary=None, canary_percent=0)
        if self.stable is None:
            raise RegistryError(f"{self.model} has no stable revision yet; deploy one without a canary percentage")
        if version == self.stable:
            raise RegistryError(f"{self.model} version {version} is already the stable revision")
        return dataclasses.replace(self, canary=version, canary_percent=percent)

    def promoted(self) -> RouteState:
        """The canary becomes the stable revision and takes all traffic."""
        return dataclasses.replace(self, stable=self._canary("promote"), canary=None, canary_percent=0)

    def rolled_back(self) -> RouteState:
        """The canary is dropped; all traffic goes to the stable revision."""
        self._canary("roll back")
        return dataclasses.replace(self, canary=None, canary_percent=0)

    def shadowed(self, version: int | None, percent: int) -> RouteState:
        """Mirror ``percent`` of the predictions to ``version``; ``None`` or 0% turns mirroring off."""
        percent = check_percent(percent, "percent")
        if version is None or not percent:
            return dataclasses.replace(self, shadow=None, shadow_percent=0)
        if self.stable is None:
            raise RegistryError(f"{self.model} has no stable revision to mirror traffic from")
        return dataclasses.replace(self, shadow=version, shadow_percent=percent)

    def _canary(self, action: str) -> int:
        if self.canary is None:
            raise RegistryError(f"{self.model} has no canary to {action}")
        return self.canary

    def describe(self) -> str:
        parts = [
            f"stable v{self.stable} {100 - self.canary_percent if self.canary else 100}%"
            if self.stable is not None
            else "no stable revision"
        ]
        if self.canary is not None:
            parts.append(f"canary v{self.canary} {self.canary_percent}%")
        if self.shadow is not None:
            parts.append(f"shadow v{self.shadow} {self.shadow_percent}% mirrored")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> RouteState:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in fields})


def check_percent(value, field: str) -> int | None:
    """A whole percentage 0-100 (or None); raises ``InvalidRequest`` naming the field otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidRequest(f"{field} must be a whole number from 0 to 100; got {value!r}")
    return value


def pick(state: RouteState, rng: random.Random, pin: str | None = None) -> list[int]:
    """The versions to try for one request, first choice first (the other one is the fallback).

    Weighted random between stable and canary; ``pin`` (``latest``/``prev``) names one revision
    and allows no fallback."""
    if pin == "prev":
        return [state.stable] if state.stable is not None else []
    if pin == "latest":
        newest = state.canary if state.canary is not None else state.stable
        return [newest] if newest is not None else []
    if state.canary is None:
        return [state.stable] if state.stable is not None else []
    to_canary = rng.random() * 100 < state.canary_percent
    order = [state.canary, state.stable] if to_canary else [state.stable, state.canary]
    return [v for v in order if v is not None]


def state_path(serving_root: Path, model: str) -> Path:
    return Path(serving_root) / model / STATE_FILE


def load_state(serving_root: Path, model: str) -> RouteState | None:
    """The saved state of ``model``, or None when it was never served here."""
    path = state_path(serving_root, model)
    if not path.is_file():
        return None
    try:
        return RouteState.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"routing state {path} is not valid ({e}); fix or delete it") from e


def save_state(serving_root: Path, state: RouteState) -> Path:
    """Write the state atomically (temporary file, then rename)."""
    path = state_path(serving_root, state.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state.to_dict(), indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path

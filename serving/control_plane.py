"""An ASGI middleware that guards the control plane's routes: a bearer token, same origin, JSON bodies.

On a protected route (``protects(path)``) a request is refused, before the application sees it, with

- 403 when it carries an ``Origin`` header that is not the server's own (``http(s)://<Host>``): a page
  in a browser cannot drive the control plane, whatever it sends;
- 401 (and ``WWW-Authenticate: Bearer``) when its ``Authorization`` is not ``Bearer <token>``
  (``kfloop.auth.token_matches``: constant time);
- 415 when it has a body, or a content type, that is not JSON (``application/json``,
  ``application/cloudevents+json`` or another ``+json`` type).

Every refusal is ``{"error": ...}``. Other routes (inference, health, metrics) pass untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from kfloop.auth import token_matches

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ControlPlaneGuard:
    """Wraps an ASGI app; requests to paths where ``protects(path)`` must carry ``token``."""

    def __init__(self, app, token: str, protects: Callable[[str], bool]):
        if not token:
            raise ValueError("the control plane needs a token")
        self.app, self.token, self.protects = app, token, protects

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.protects(scope["path"]):
            refusal = self.refusal(scope)
            if refusal is not None:
                return await _refuse(send, *refusal)
        return await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str, list] | None:
        text: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            text.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        origin, host = text.get("origin"), text.get("host", "")
        if origin is not None and origin.rstrip("/").lower() not in (
            f"http://{host}".lower(),
            f"https://{host}".lower(),
        ):
            return 403, f"cross-origin request refused: Origin {origin[:200]!r} is not this server ({host!r})", []
        if not token_matches(text.get("authorization"), self.token):
            why = "wrong" if text.get("authorization") else "missing"
            return (
                401,
                f"{why} bearer token: the control plane needs the header 'Authorization: Bearer <token>' "
                f"with the token kfloop serve wrote to KFLOOP_HOME/control-token",
                [(b"www-authenticate", b'Bearer realm="kfloop"')],
            )
        if scope["method"] in BODY_METHODS:
            media = text.get("content-type", "").split(";")[0].strip().lower()
            has_body = text.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in text
            if (media or has_body) and not _is_json(media):
                return 415, f"content type {media or 'none'!r} is not accepted here: send JSON (application/json)", []
        return None


def _is_json(media: str) -> bool:
    return media in ("application/json", "application/cloudevents+json") or media.endswith("+json")


async def _refuse(send, status: int, message: str, extra: list) -> None:
    body = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

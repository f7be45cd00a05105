"""Starlette's own HTTP errors as kfloop answers them: ``{"error": "..."}`` JSON, like every other error.

Starlette answers an unknown path (404) and a method a route does not take (405, with ``Allow``) in
plain text; ``EXCEPTION_HANDLERS`` (given to ``Starlette(exception_handlers=...)``) turns them, and any
other ``HTTPException``, into JSON with the same status and headers. The gateway and the trigger use it;
the model servers' errors are KServe's, mapped to JSON by ``kfloop.serving.model_servers``.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

PATH_CHARS = 200  # of the request path quoted in the message


async def http_error(request: Request, error: HTTPException) -> Response:
    """``error`` as ``{"error": ...}`` naming the method and path (and, for a 405, the methods allowed)."""
    headers = dict(error.headers or {})
    path = request.url.path
    path = path if len(path) <= PATH_CHARS else path[:PATH_CHARS] + "..."
    message = f"{error.detail}: {request.method} {path}"
    if error.status_code == 405 and headers.get("Allow"):
        message += f" (this path takes {headers['Allow']})"
    if error.status_code in (204, 304):  # no body allowed
        return Response(status_code=error.status_code, headers=headers)
    return Response(orjson.dumps({"error": message}), error.status_code, headers=headers, media_type="application/json")


EXCEPTION_HANDLERS = {HTTPException: http_error}

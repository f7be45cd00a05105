"""The gateway's CloudEvents sink: where the loop's own events end up when ``kfloop serve`` runs it.

The trigger service started by ``kfloop serve`` emits ``io.kfloop.retrain.started``,
``io.kfloop.retrain.finished``, ``io.kfloop.quality.degraded`` and the canary analysis's
``io.kfloop.rollout.decision`` events to its sink; on a cluster that is the Knative Broker, on one
machine it is ``POST /kfloop/v1/events`` on the gateway. ``EventSink.receive`` accepts one event
(binary or structured mode), records it in the model's event log (``kfloop.store.event_log``, idempotent
on the event id, so redelivery keeps one copy; the trigger records its events there itself too)
and hands it to an optional callback once per event id (``kfloop serve`` prints a line per event).
A malformed event, or one naming no valid model in ``data.model`` or ``subject``, is HTTP 400 and
changes nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from kfloop.errors import InvalidRequest, KfloopError, RegistryError
from kfloop.events.cloudevents import parse_event
from kfloop.names import validate_model_name
from kfloop.store.event_log import record_event
from kfloop.store.objects import ObjectStore

log = logging.getLogger(__name__)
MAX_SEEN = 10_000


class EventSink:
    """Records received CloudEvents in the event log of ``store``; counts them in ``received``."""

    def __init__(self, store: ObjectStore, on_event: Callable[[dict], None] | None = None):
        self.store, self.on_event = store, on_event
        self.received = 0
        self._seen: collections.OrderedDict = collections.OrderedDict()  # ids handed to on_event, newest last

    async def receive(self, request: Request) -> Response:
        try:
            event = parse_event(request.headers, await request.body())
            model = event_model(event)
            recorded = await asyncio.to_thread(record_event, self.store, model, event)
        except InvalidRequest as e:
            return _json(400, {"error": str(e)})
        except KfloopError as e:  # the store failed: the sender's outbox tries again
            log.error("could not record event: %s", e)
            return _json(503, {"error": str(e)})
        self.received += 1
        if self.on_event is not None and self._first_time(f"{event['source']}#{event['id']}"):
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001 - a printing problem must not fail the delivery
                log.exception("event callback failed for %s", event.get("id"))
        return _json(202, {"recorded": recorded, "model": model, "id": event["id"]})

    def _first_time(self, key: str) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        return True


def event_model(event: dict) -> str:
    """The model an event is about (``data.model``, else ``subject``); InvalidRequest when none is valid."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    model = data.get("model") or event.get("subject")
    try:
        return validate_model_name(model if isinstance(model, str) else "")
    except RegistryError as e:
        raise InvalidRequest(
            f"event {event.get('id')!r} ({event.get('type')}) names no valid model in data.model or subject: {e}"
        ) from None


def describe(event: dict) -> str:
    """One line about a loop event, for a console."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    kind = str(event.get("type", "?")).removeprefix("io.kfloop.")
    details = [
        f"{k}={data[k]}"
        for k in (
            "model",
            "run_name",
            "status",
            "registered",
            "model_version",
            "canary_version",
            "step",
            "percent",
            "verdict",
            "decision",
            "reason",
        )
        if data.get(k) not in (None, "")
    ]
    return f"event {kind}: " + ", ".join(details)


def _json(status: int, doc: dict) -> Response:
    return Response(orjson.dumps(doc), status, media_type="application/json")

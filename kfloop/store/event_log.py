"""The event log: every CloudEvent the loop acts on or decides, kept on the object store.

The trigger service records each event it receives; rollouts record their decisions. The
monitoring report and ``kfloop demo`` read the log to draw the timeline. Each event is one
sealed (checksummed) JSON object at ``events/<model>/<event id>.json``, created with
``put_if_absent``: recording the same event twice keeps one copy, so at-least-once delivery
upstream does not duplicate entries.
"""

from __future__ import annotations

from kfloop.names import event_key, events_prefix
from kfloop.store.objects import ObjectStore, get_json, seal_json


def record_event(store: ObjectStore, model: str, event: dict) -> bool:
    """Keep ``event`` in the log of ``model``; False when an event with this id is already there."""
    return store.put_if_absent(event_key(model, event["id"]), seal_json(dict(event)))


def read_events(store: ObjectStore, model: str, types: tuple[str, ...] = ()) -> list[dict]:
    """The model's events ordered by their ``time``, optionally only of ``types``; checksums verified."""
    events = [get_json(store, key) for key in store.list(events_prefix(model)) if key.endswith(".json")]
    return sorted((e for e in events if not types or e.get("type") in types), key=lambda e: e.get("time", ""))

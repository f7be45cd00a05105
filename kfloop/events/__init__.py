"""CloudEvents: building, parsing and sending the events the loop emits (``cloudevents``), and the
durable at-least-once outbox that delivers them to a sink such as Knative's ``K_SINK`` (``outbox``).

The event types themselves are cross-process names and are defined in ``kfloop.names``.

May import: ``kfloop.store`` and the leaves.
"""

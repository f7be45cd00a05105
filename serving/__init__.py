"""Serving: the processes that answer requests, in three roles, each in its own folder.

``model_servers`` (the KServe predictor and drift transformer: what an InferenceService runs),
``trigger`` (the retraining trigger service: what the Knative Triggers call) and ``local`` (the
one-machine platform of ``kfloop serve``: gateway, routing, revisions). What the roles share sits
beside them: ``body_limit`` (the ASGI middleware that refuses large bodies) and ``control_plane`` (the
bearer token, same-origin and JSON checks of the admin and feedback routes).

Installed as ``kfloop.serving``. May import the core packages and ``kfloop.pipelines``; the core never
imports it.
"""

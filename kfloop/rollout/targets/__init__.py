"""Rollout targets: what a rollout drives to move traffic.

``local`` speaks to the admin API of ``kfloop serve``'s gateway; ``kubernetes`` patches KServe
InferenceServices (``isvc_template``: the first deployment, from the base manifest; ``isvc_status``:
what an InferenceService says about versions, traffic and readiness).

May import what ``kfloop.rollout`` may.
"""
